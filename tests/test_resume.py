"""Kill a real run's driver mid-way; the same command then finishes, reusing what was committed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lens_ray.storage import Storage

ROOT = Path(__file__).resolve().parents[1]


def kill_when_ready(ready, process_marker: str, killed: list, timeout: float = 120, poll: float = 0.1) -> None:
    """Once ready() is true, SIGKILL the first process whose command line holds process_marker."""
    import psutil
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            for p in psutil.process_iter(["cmdline"]):
                if process_marker in " ".join(p.info["cmdline"] or []):
                    p.kill()
                    killed.append(p.pid)
                    return
        time.sleep(poll)


def test_killed_driver_rerun_finishes_and_reuses_work(ray_cluster, tiny_llama, hh_path, tmp_path):
    cmd = [sys.executable, str(ROOT / "jobs" / "full.py"), "--data", str(hh_path), "--model", tiny_llama,
           "--seed-pairs", "40", "--eval-pairs", "20", "--seeds", "1", "--factors", "4",
           "--methods", "original,lens", "--storage", str(tmp_path), "--name", "k",
           "--set", "vae.epochs=200", "--set", "reward.max_steps=30", "--set", "embed.max_length=48"]
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while "[fit_vae] ..." not in log.read_text():      # embeddings committed; the VAE is training
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the run never reached the VAE stage"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = Storage(str(tmp_path / "k"))
    assert not out.exists("report.json")                 # nothing final from the killed run
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_json("report.json")
    assert report["embedding"]["texts"] == 0              # the killed run's embeddings were committed
    assert len(report["results"]) == 2 and report["eval_pairs"] == 20


def test_killed_train_worker_restarts_from_checkpoint(ray_cluster, tmp_path):
    import threading

    import numpy as np

    from lens_ray.config import VAEConfig
    from lens_ray.ray_train import fit_vaes

    rng = np.random.default_rng(0)
    data = {s: tuple(rng.standard_normal((n, 16)).astype(np.float32) for n in (400, 400, 50, 50)) for s in range(4)}
    killed = []
    checkpointed = lambda: any((tmp_path / "t" / "vae-kill").glob("**/models.json"))  # noqa: E731  one seed done
    t = threading.Thread(target=kill_when_ready, args=(checkpointed, "RayTrainWorker", killed))
    t.start()
    states, meta = fit_vaes(VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=60, num_workers=2), data, "vae-kill",
                            Storage(str(tmp_path / "t")), max_failures=2)
    t.join()
    assert killed, "no Train worker was found to kill"
    assert set(states) == {f"seed-{s}" for s in range(4)}


def test_killed_embedding_actor_is_replaced(ray_cluster, tiny_llama):
    import threading

    from lens_ray.config import EmbedConfig
    from lens_ray.ray_data import EmbedItem, embed_items

    prompt = [{"role": "user", "content": "How do I bake bread?"}]
    items = [EmbedItem(f"k{i}", prompt, "word " * (i % 40 + 1) + str(i)) for i in range(3000)]
    cfg = EmbedConfig(model=tiny_llama, batch_size=4, max_length=96, num_actors=1, cpus_per_actor=0.5, dtype="float32")
    killed, seen = [], []
    # once the actor has produced output, kill it mid-run
    t = threading.Thread(target=kill_when_ready, args=(lambda: bool(seen), "MapBatches(Embedder)", killed),
                         kwargs={"poll": 0.05})
    t.start()
    found, stats = embed_items(items, cfg, log=seen.append, on_chunk=lambda k, v: seen.append(len(k)), chunk=64)
    t.join()
    assert killed, "no embedding actor was found to kill"
    assert set(found) == {i.key for i in items} and stats.rows == len(items)    # every row, exactly once

"""Kill a real run's driver mid-way; the same command then finishes, reusing what was committed."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lens_ray.store.storage import Storage

ROOT = Path(__file__).resolve().parents[2]


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
           "--set", "vae.epochs=200", "--set", "reward.max_steps=30", "--set", "embed.max_length=48",
           "--set", "selection.enabled=false"]
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
    console = done.stdout + done.stderr
    for noise in ("Started a local Ray instance", "Starting execution of Dataset", "Execution plan of Dataset",
                  "Progress bars disabled", "Requesting resources", "Setting up process group"):
        assert noise not in console, console[-3000:]      # Ray's INFO lines stay in Ray's log folder
    assert "[train_reward] done" in console and "artifacts:" in console          # lens-ray's own lines stay
    report = out.read_json("report.json")
    assert report["embedding"]["texts"] == 0              # the killed run's embeddings were committed
    assert len(report["results"]) == 2 and report["eval_pairs"] == 20


def _vae_fit_with_kills(tmp_path, kills: int, max_failures: int | None, killed: list[int] | None = None):
    """Fit 5 seeds' VAEs on 2 DDP workers; SIGKILL a Train worker after the 1st, ..., kills-th checkpoint (each
    death after the first needs a checkpoint written after the one before: the group resumed)."""
    import threading

    import numpy as np

    from lens_ray.config import ResourcesConfig, VAEConfig
    from lens_ray.core.records import SeedData
    from lens_ray.distributed.training import train_vaes

    rng = np.random.default_rng(0)
    seeds = [SeedData(s, *(rng.standard_normal((n, 16)).astype(np.float32) for n in (400, 400, 50, 50)))
             for s in range(5)]
    folder = tmp_path / "t" / "vae-kill"
    killed = [] if killed is None else killed

    def killer():
        for k in range(kills):                     # after the (k+1)-th model's checkpoint, one more death
            kill_when_ready(lambda: len(list(folder.glob("**/models.json"))) > k, "RayTrainWorker", killed)
            time.sleep(3)                          # let the dead worker's group fail and restart

    t = threading.Thread(target=killer)
    t.start()
    res = ResourcesConfig(vae_workers=2) if max_failures is None else \
        ResourcesConfig(vae_workers=2, train_max_failures=max_failures)
    try:
        return train_vaes(VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=80), seeds, "vae-kill",
                        Storage(str(tmp_path / "t")), res), killed
    finally:
        t.join()


def test_two_train_worker_deaths_are_survived_with_the_default_limit(ray_cluster, tmp_path):
    (states, meta), killed = _vae_fit_with_kills(tmp_path, kills=2, max_failures=None)
    assert len(killed) == 2, "the Train workers were not killed twice"
    assert set(states) == {f"seed-{s}" for s in range(5)}


def test_a_failure_limit_of_one_stops_at_the_second_death(ray_cluster, tmp_path):
    from ray.train import TrainingFailedError
    killed: list[int] = []
    with pytest.raises(TrainingFailedError):
        _vae_fit_with_kills(tmp_path, kills=2, max_failures=1, killed=killed)
    assert len(killed) == 2        # the first death was survived (the group resumed and checkpointed again)


def test_killed_embedding_actor_is_replaced(ray_cluster, tiny_llama):
    import threading

    from lens_ray.config import EmbedConfig, ResourcesConfig
    from lens_ray.distributed.embedding import EmbedItem, embed_items

    prompt = [{"role": "user", "content": "How do I bake bread?"}]
    items = [EmbedItem(f"k{i}", prompt, "word " * (i % 40 + 1) + str(i)) for i in range(3000)]
    cfg = EmbedConfig(model=tiny_llama, max_length=96, dtype="float32")
    res = ResourcesConfig(embed_batch_size=4, embed_actors=1, embed_cpus_per_actor=0.5)
    killed, seen = [], []
    # once the actor has produced output, kill it mid-run
    t = threading.Thread(target=kill_when_ready, args=(lambda: bool(seen), "MapBatches(Embedder)", killed),
                         kwargs={"poll": 0.05})
    t.start()
    found, stats = embed_items(items, cfg, res, log=seen.append, on_chunk=lambda k, v: seen.append(len(k)), chunk=64)
    t.join()
    assert killed, "no embedding actor was found to kill"
    assert set(found) == {i.key for i in items} and stats.rows == len(items)    # every row, exactly once


def test_corrupt_train_checkpoints_are_refitted_not_trusted(ray_cluster, tiny_llama, hh_path, tmp_path):
    """Flipped bytes in every Ray Train checkpoint: a re-run that resumes from them refits the models (the
    same models again), instead of turning garbage into heads with fresh checksums."""
    from lens_ray.cli import run_main
    argv = ["--data", str(hh_path), "--model", tiny_llama, "--seed-pairs", "40", "--eval-pairs", "20", "--seeds", "1",
            "--factors", "4", "--methods", "original,lens", "--storage", str(tmp_path), "--name", "c",
            "--set", "vae.epochs=5", "--set", "reward.max_steps=30", "--set", "embed.max_length=48",
            "--set", "selection.enabled=false"]
    first = run_main(argv)
    out = tmp_path / "c"
    checkpoints = list((out / "ray_train").glob("**/models.safetensors"))
    assert checkpoints
    for f in checkpoints:
        blob = bytearray(f.read_bytes())
        blob[-64:] = bytes(b ^ 0xFF for b in blob[-64:])       # weights, not the header: still parses
        f.write_bytes(bytes(blob))
    for folder in ("heads", "vae"):
        shutil.rmtree(out / folder)
    (out / "report.json").unlink()
    again = run_main(argv)
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in first["results"]]
    assert again["vae"] == first["vae"]


def test_two_jobs_on_one_output_one_refused_and_the_shared_cache_complete(ray_cluster, tiny_llama, hh_path,
                                                                           tmp_path):
    base = [sys.executable, str(ROOT / "jobs" / "full.py"), "--data", str(hh_path), "--model", tiny_llama,
            "--seed-pairs", "30", "--eval-pairs", "20", "--seeds", "1", "--methods", "original",
            "--storage", str(tmp_path), "--set", "embed.max_length=48", "--set", "reward.max_steps=20",
            "--set", "selection.enabled=false"]
    jobs = {name: subprocess.Popen(base + ["--name", name.rstrip("2")], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for name in ("a", "b")}
    time.sleep(1)
    jobs["a2"] = subprocess.Popen(base + ["--name", "a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = {name: (p.wait(timeout=600), *p.communicate()) for name, p in jobs.items()}
    codes = {name: d[0] for name, d in done.items()}
    assert codes["b"] == 0, done["b"][2][-3000:]
    assert sorted([codes["a"], codes["a2"]]) == [0, 2], {k: d[2][-1500:] for k, d in done.items()}
    loser = done["a"] if codes["a"] == 2 else done["a2"]
    assert "is in use by run a" in loser[2] and "wait for it with --wait" in loser[2]
    # every text both concurrent writers embedded is in the cache they share
    from lens_ray.store.embedding_cache import EmbeddingCache
    from lens_ray.store.storage import Manifest
    run_a = Storage(str(tmp_path / "a"))
    settings = Manifest.load(run_a.child("embeddings")).meta
    cache = EmbeddingCache(Storage(str(tmp_path / "cache")).child("embeddings"), settings)
    report = run_a.read_json("report.json")
    assert report["embedding"]["texts"] == 100 and len(cache.committed()) >= 2
    from lens_ray.cli import config_from_args, run_parser
    from lens_ray.core.records import bon_draws, table_texts
    from lens_ray.data.embed import settings_key
    from lens_ray.data.ingest import load_datasets
    cfg = config_from_args(run_parser().parse_args(base[2:] + ["--name", "a"]))
    ds = load_datasets(cfg.data)
    keys = [settings_key(settings, p, r) for rows in table_texts(ds, bon_draws(cfg, ds)[0]).values() for p, r in rows]
    assert len(cache.lookup(keys)) == len(set(keys)) == 100

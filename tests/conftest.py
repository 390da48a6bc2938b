"""Shared fixtures: one local Ray per session, one moto S3 server on loopback, tiny real models."""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")     # tests log to MLflow's file store, not a server
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "LENS_RAY_MODEL_CACHE" not in os.environ:      # dequantized GGUF copies: the session's own, removed at its end
    os.environ["LENS_RAY_MODEL_CACHE"] = _MODEL_CACHE = tempfile.mkdtemp(prefix="lens-ray-models-")
    atexit.register(shutil.rmtree, _MODEL_CACHE, ignore_errors=True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED_DATA / "hh_harmless_dev.jsonl.gz"
BON = SHARED_DATA / "alpaca_bon_dev.jsonl.gz"


def _real_data(path: Path) -> Path:
    """A real data file, or a skip with the reason; under CI (CI=true) a missing file fails: a green CI that
    skipped every pipeline, serving, export and selection test would prove nothing."""
    if not path.exists():
        why = f"real data not found at {path} (../shared/data beside the checkout)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}: CI must have it", pytrace=False)
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def hh_path() -> Path:
    return _real_data(HH)


@pytest.fixture(scope="session")
def bon_path() -> Path:
    return _real_data(BON)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server as a real HTTP endpoint on 127.0.0.1 (a random port), with a bucket.

    Its environment is set before Ray starts, so Ray workers reach the same endpoint.
    """
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    import boto3
    from botocore.exceptions import BotoCoreError
    deadline = time.time() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lens-test")
            break
        except BotoCoreError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto S3 server did not start")
            time.sleep(0.3)
    yield {"endpoint": endpoint, "bucket": "lens-test"}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """The session's one local Ray (2 CPUs), started after the S3 environment is set."""
    import ray
    from ray.data import DataContext

    from lens_ray.distributed.proxy_guard import environment
    os.environ.update(environment(10.0, 1000))          # Serve's proxy bounded, as `lens-ray serve` starts it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


# ChatML, as SmolLM2 and Qwen write it; like many real templates it refuses a role it does not know
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
                 "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
                 "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_llama(folder) -> str:
    """A tiny random Llama with a real byte-level BPE tokenizer and chat template, saved in `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["How do I bake bread? Mix flour, water and yeast.", "I can't help with that request.",
              "Human: hello Assistant: hi there, how can I help you today?"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, architectures=["LlamaForCausalLM"])
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


FAST = ["--set", "vae.epochs=5", "--set", "reward.max_steps=30", "--set", "reward.eval_every=10",
        "--set", "embed.max_length=64", "--set", "embed.batch_size=16", "--set", "embed.dtype=float32",
        "--set", "reward.linear_folds=3", "--set", "reward.linear_l2=0.01,1.0",   # 18 linear fits, not 90
        "--set", "selection.enabled=false"]        # local_run (the shared run) selects


@pytest.fixture(scope="session")
def local_run(ray_cluster, tiny_llama, hh_path, tmp_path_factory):
    """One finished run of the whole job (tiny model, real HH data, local storage): (argv, report, Storage)."""
    from lens_ray.cli import run_main
    from lens_ray.store.storage import Storage
    storage = tmp_path_factory.mktemp("runs")
    argv = ["--data", str(hh_path), "--model", tiny_llama, "--seed-pairs", "60", "--eval-pairs", "40",
            "--seeds", "2", "--factors", "2,4", "--storage", str(storage), "--name", "t"] + FAST + \
        ["--set", "selection.enabled=true", "--set", "selection.folds=3", "--set", "selection.finalists=1",
         "--set", "selection.losses=bradley_terry,pointwise", "--set", "selection.concat_layers=true",
         "--set", "selection.mlp_seeds=2", "--set", "selection.ensembles=2,3",
         "--set", f"tracking.mlflow_uri=file://{storage / 'mlruns'}"]       # MLflow's file store, as a server
    console = io.StringIO()
    with contextlib.redirect_stdout(console):         # what a user reads, kept for tests of it (console.log)
        report = run_main(argv)
    sys.stdout.write(console.getvalue())
    (storage / "console.log").write_text(console.getvalue())
    return argv, report, Storage(str(storage / "t"))

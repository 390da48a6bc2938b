"""Ray Train (TorchTrainer, DDP) for the VAEs and the reward heads.

Start-up of a trainer costs seconds on a small machine, so one trainer run fits many models in turn
(every seed's VAE; every method x factor x seed head). After each model, rank 0 attaches a checkpoint
holding all models finished so far; a restarted worker group (FailureConfig) or a re-run with the
same run name resumes from it and skips finished models. Run names carry a fingerprint of their
inputs, so a checkpoint from other data or settings is never resumed.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model
from safetensors.torch import load_file, save_file

from lens_ray.config import RewardConfig, VAEConfig
from lens_ray.artifacts import read_synthetic
from lens_ray.fit import PairSet, augmented_set, fit_head, fit_vae
from lens_ray.models.reward import RewardHead, bradley_terry_loss
from lens_ray.models.vae import relative_reconstruction_error
from lens_ray.storage import Storage

STATE, META = "models.safetensors", "models.json"


def save_models(folder: str, states: dict[str, dict[str, torch.Tensor]], meta: dict[str, dict]) -> None:
    flat = {f"{name}/{k}": v.detach().cpu().contiguous() for name, sd in states.items() for k, v in sd.items()}
    save_file(flat, os.path.join(folder, STATE))
    with open(os.path.join(folder, META), "w") as fh:
        json.dump(meta, fh)


def load_models(folder: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict]]:
    """safetensors + json only: nothing from storage is unpickled."""
    with open(os.path.join(folder, META)) as fh:
        meta = json.load(fh)
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta}
    for key, v in load_file(os.path.join(folder, STATE)).items():
        name, _, param = key.partition("/")
        states[name][param] = v
    return states, meta


def quiet_train_logs() -> None:
    """Our loops report per model; Ray Train's own line per checkpoint and report drowns `ray job logs`."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def _resume() -> tuple[dict, dict]:
    quiet_train_logs()
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}, {}
    with ckpt.as_directory() as d:
        return load_models(d)


def _report(metrics: dict, states: dict, meta: dict) -> None:
    """Every worker reports (it is collective); rank 0 attaches the checkpoint."""
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as d:
            save_models(d, states, meta)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics)


def _shard():
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    return lambda idx: idx[rank::world]


def _wrap(model):
    return prepare_model(model, move_to_device=False) if ray.train.get_context().get_world_size() > 1 else model


# ------------------------------------------------------------------ VAE

def _vae_loop(config: dict) -> None:
    cfg = VAEConfig(**config["vae"])
    states, meta = _resume()
    for seed, (pos, neg, val_pos, val_neg) in config["data"].items():
        name = f"seed-{seed}"
        if name in states:
            continue
        torch.set_num_threads(max(1, int(config["threads"])))
        vae, metrics = fit_vae(cfg, torch.tensor(pos), torch.tensor(neg), int(seed),
                               shard=_shard(), wrap=_wrap)
        metrics["rel_recon_val"] = relative_reconstruction_error(vae, torch.tensor(np.concatenate([val_pos, val_neg])))
        states[name], meta[name] = vae.state_dict(), {"config": vae.config(), "metrics": metrics}
        _report({"model": name, **metrics}, states, meta)


def fit_vaes(cfg: VAEConfig, data: dict[int, tuple[np.ndarray, ...]], run_name: str, storage: Storage,
             max_failures: int = 1) -> tuple[dict, dict]:
    """data: seed -> (train_pos, train_neg, val_pos, val_neg), each (n, d) -> states, meta by 'seed-<s>'."""
    config = {"vae": asdict(cfg), "data": data, "threads": _threads(cfg.num_workers)}
    return _fit(_vae_loop, config, cfg.num_workers, cfg.cpus_per_worker, run_name, storage, max_failures)


# ------------------------------------------------------------------ reward heads

@dataclass
class HeadJob:
    name: str                  # e.g. lens-f8-s2
    method: str
    factor: int
    seed: int
    synthetic: str | None      # file in <run>/synthetic holding (n_train, k, d) x2, or None


def _head_loop(config: dict) -> None:
    cfg = RewardConfig(**config["reward"])
    states, meta = _resume()
    store = Storage(config["run_uri"])
    torch.set_num_threads(max(1, int(config["threads"])))
    for job in (HeadJob(**j) for j in config["jobs"]):
        if job.name in states:
            continue
        pos, neg, val_pos, val_neg = (torch.tensor(a) for a in config["data"][job.seed])
        train = PairSet(pos, neg)
        if job.synthetic:
            syn_pos, syn_neg = (torch.from_numpy(a) for a in read_synthetic(store, job.synthetic))
            train = augmented_set(pos, neg, syn_pos, syn_neg, job.factor, job.seed, cfg.synthetic_weight)
        fit = fit_head(cfg, train, PairSet(val_pos, val_neg), job.seed, pos, neg, shard=_shard(), wrap=_wrap)
        states[job.name] = fit.head.state_dict()
        meta[job.name] = {"config": fit.head.config(), "job": asdict(job),
                          "metrics": {"val_acc": fit.best_val_acc, "best_step": fit.best_step, "steps": fit.steps,
                                      "train_pairs": len(train)}}
        _report({"model": job.name, "val_acc": fit.best_val_acc}, states, meta)


def fit_heads(cfg: RewardConfig, jobs: list[HeadJob], data: dict[int, tuple[np.ndarray, ...]], run_uri: str,
              run_name: str, storage: Storage, max_failures: int = 1) -> tuple[dict, dict]:
    """Every head in one trainer run. data: seed -> (train_pos, train_neg, val_pos, val_neg)."""
    config = {"reward": asdict(cfg), "jobs": [asdict(j) for j in jobs], "data": data, "run_uri": run_uri,
              "threads": _threads(cfg.num_workers)}
    return _fit(_head_loop, config, cfg.num_workers, cfg.cpus_per_worker, run_name, storage, max_failures)


# ------------------------------------------------------------------ shared

def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _fit(loop, config: dict, workers: int, cpus: float, run_name: str, storage: Storage, max_failures: int,
         datasets: dict | None = None, with_metrics: bool = False):
    """One TorchTrainer run -> the models of its last checkpoint (and its last metrics, if asked)."""
    if storage.protocol == "file":
        os.makedirs(storage.path(), exist_ok=True)
    trainer = TorchTrainer(
        loop, train_loop_config=config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=run_name, storage_path=storage.path(), storage_filesystem=storage.fs,
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        states, meta = load_models(d)
    return (states, meta, result.metrics) if with_metrics else (states, meta)


# ------------------------------------------------------------------ streaming over millions of pairs

def _stream_loop(config: dict) -> None:
    """One head over a streamed dataset; a checkpoint (head + optimizer) after every epoch, resumed on restart."""
    import time
    cfg = RewardConfig(**config["reward"])
    torch.set_num_threads(max(1, int(config["threads"])))
    torch.manual_seed(config["seed"])
    head = RewardHead(config["dim"], cfg.hidden_dim, cfg.depth, cfg.dropout)
    head.norm.mean.copy_(torch.tensor(config["norm_mean"]))
    head.norm.std.copy_(torch.tensor(config["norm_std"]))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    states, meta = _resume()
    first_epoch = 0
    if "head" in states:
        head.load_state_dict(states["head"])
        opt.load_state_dict(_unflatten_optimizer(states["optimizer"], meta["optimizer"]["layout"]))
        first_epoch = meta["head"]["metrics"]["epochs_done"]
    net = _wrap(head)
    shard = ray.train.get_dataset_shard("train")
    seen, t0, loss = 0, time.time(), torch.tensor(0.0)
    for epoch in range(first_epoch, config["epochs"]):
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, dtypes=torch.float32):
            n = len(batch["pos"])
            r = net(torch.cat([batch["pos"], batch["neg"]]))
            loss = bradley_terry_loss(r[:n], r[n:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += n
        secs = time.time() - t0
        flat, layout = _flatten_optimizer(opt.state_dict())
        _report({"epoch": epoch + 1, "pairs": seen, "seconds": secs, "pairs_per_s": seen / max(secs, 1e-9),
                 "loss": loss.item()},
                {"head": head.state_dict(), "optimizer": flat},
                {"head": {"config": head.config(), "metrics": {"pairs": seen, "epochs_done": epoch + 1}},
                 "optimizer": {"layout": layout}})


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as tensors (for safetensors) plus a JSON layout: no pickle in checkpoints."""
    tensors, layout = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        layout["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().clone().contiguous()
                layout["state"][str(pid)][k] = "tensor"
            else:
                layout["state"][str(pid)][k] = v
    return tensors, layout


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state = {int(pid): {k: tensors[f"{pid}.{k}"] if v == "tensor" else v for k, v in st.items()}
             for pid, st in layout["state"].items()}
    return {"state": state, "param_groups": layout["param_groups"]}


def fit_head_streaming(cfg: RewardConfig, train_ds, dim: int, norm_mean: np.ndarray, norm_std: np.ndarray,
                       run_name: str, storage: Storage, epochs: int = 1, seed: int = 0, max_failures: int = 1):
    """Train one head by streaming a Ray Dataset of {pos, neg} (n, d) batches; returns (head, metrics).
    A checkpoint after every epoch: a lost worker (FailureConfig) or a re-run with the same name resumes."""
    config = {"reward": asdict(cfg), "dim": dim, "norm_mean": norm_mean.tolist(), "norm_std": norm_std.tolist(),
              "epochs": epochs, "seed": seed, "threads": _threads(cfg.num_workers)}
    states, _, metrics = _fit(_stream_loop, config, cfg.num_workers, cfg.cpus_per_worker, run_name, storage,
                              max_failures, datasets={"train": train_ds}, with_metrics=True)
    head = RewardHead(dim, cfg.hidden_dim, cfg.depth, cfg.dropout)
    head.load_state_dict(states["head"])
    return head.eval(), metrics

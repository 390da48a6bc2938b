"""Ray Train (TorchTrainer, DDP) for the VAEs and the reward heads.

Start-up of a trainer costs seconds on a small machine, so one trainer run fits many models in turn
(every seed's VAE; every method x factor x seed head). After each model, rank 0 attaches a checkpoint
holding all models finished so far; a restarted worker group (FailureConfig) or a re-run with the
same run name resumes from it and skips finished models. Run names carry a fingerprint of their
inputs, so a checkpoint from other data or settings is never resumed, and a checkpoint's weights are
verified against the checksum written with them: a corrupt one is ignored and its models refitted.
A fit whose loss stops being finite is recorded as failed (with the reason), never as a model.
"""
from __future__ import annotations

import importlib
import ipaddress
import json
import logging
import os
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer, prepare_model
from ray.train.torch.config import _TorchBackend
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lens_ray.config import ResourcesConfig, RewardConfig, VAEConfig
from lens_ray.core.augment import PairSet, augmented_set
from lens_ray.core.fit import NonFiniteError, Workers, fit_reward_head, fit_vae
from lens_ray.core.heads import LOSS, RewardHead
from lens_ray.core.records import Cell, SeedData
from lens_ray.core.vae import relative_reconstruction_error
from lens_ray.store.artifacts import read_synthetic
from lens_ray.store.storage import ChecksumError, Storage, sha256

STATE, META = "models.safetensors", "models.json"


def save_models(folder: str, states: dict[str, dict[str, torch.Tensor]], meta: dict[str, dict]) -> None:
    """Every model's weights in one safetensors file, their metadata and its checksum in a JSON beside it."""
    flat = {f"{name}/{k}": v.detach().cpu().contiguous() for name, sd in states.items() for k, v in sd.items()}
    blob = st_save(flat)
    with open(os.path.join(folder, STATE), "wb") as fh:
        fh.write(blob)
    with open(os.path.join(folder, META), "w") as fh:
        json.dump({"models": meta, "sha256": sha256(blob)}, fh)


def load_models(folder: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict]]:
    """safetensors + json only (nothing from storage is unpickled), verified: ChecksumError if corrupt."""
    try:
        with open(os.path.join(folder, META)) as fh:
            doc = json.load(fh)
        with open(os.path.join(folder, STATE), "rb") as fh:
            blob = fh.read()
    except (OSError, ValueError) as exc:
        raise ChecksumError(f"checkpoint {folder}: unreadable ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("sha256") != sha256(blob):
        raise ChecksumError(f"checkpoint {folder}: weights do not match their checksum")
    meta = doc["models"]
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta}
    for key, v in st_load(blob).items():
        name, _, param = key.partition("/")
        states[name][param] = v
    return states, meta


def quiet_train_logs() -> None:
    """Our loops report per model; Ray Train's own line per checkpoint and report drowns `ray job logs`."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    from ray.train.v2._internal.execution import context  # its logger is named by its file, not ray.train
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _resume() -> tuple[dict, dict]:
    """The models of the latest checkpoint; none when there is none or it does not verify."""
    quiet_train_logs()
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}, {}
    try:
        with ckpt.as_directory() as d:
            return load_models(d)
    except ChecksumError as exc:
        print(f"ignoring a corrupt checkpoint, refitting its models: {exc}", flush=True)
        return {}, {}


def _report(metrics: dict, states: dict, meta: dict, progress: str | None = None) -> None:
    """Every worker reports (it is collective); rank 0 attaches the checkpoint and prints the progress line
    (Ray forwards it to the job's log)."""
    if ray.train.get_context().get_world_rank() == 0:
        if progress:                    # the worker's own stdout: Train's patched print would log it twice
            sys.__stdout__.write(progress + "\n")
            sys.__stdout__.flush()
        with tempfile.TemporaryDirectory() as d:
            save_models(d, states, meta)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics)


def _any_worker(flag: bool) -> bool:
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _workers() -> Workers:
    """The DDP group's hooks for the pure loops (see fit.Workers); the identity with one worker."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if world == 1:
        return Workers()
    return Workers(shard=lambda idx: idx[rank::world], wrap=lambda m: prepare_model(m, move_to_device=False),
                   any=_any_worker, size=world)


# ------------------------------------------------------------------ VAE

def _vae_loop(config: dict) -> None:
    cfg = VAEConfig(**config["vae"])
    states, meta = _resume()
    threads = _set_threads()
    for sd in config["seeds"]:
        name = f"seed-{sd.seed}"
        if name in meta:
            continue
        done = f"({len(meta) + 1}/{len(config['seeds'])})"
        try:
            vae, metrics = fit_vae(cfg, torch.tensor(sd.train_pos), torch.tensor(sd.train_neg), sd.seed,
                                   workers=_workers())
        except NonFiniteError as exc:
            states[name], meta[name] = {}, {"failed": f"VAE seed {sd.seed}: {exc}"}
            _report({"model": name}, states, meta, f"  VAE seed {sd.seed} failed: {exc} {done}")
            continue
        metrics["threads"] = threads
        metrics["rel_recon_val"] = relative_reconstruction_error(
            vae, torch.tensor(np.concatenate([sd.val_pos, sd.val_neg])))
        states[name], meta[name] = vae.state_dict(), {"config": vae.config(), "metrics": metrics}
        _report({"model": name, **metrics}, states, meta,
                f"  VAE seed {sd.seed} fitted: relative recon error {metrics['rel_recon_train']:.3f} {done}")


def train_vaes(cfg: VAEConfig, seeds: list[SeedData], run_name: str, storage: Storage,
             res: ResourcesConfig) -> tuple[dict, dict]:
    """One VAE per seed -> states, meta by 'seed-<s>' (meta holds "failed" instead of a model for a fit
    that diverged)."""
    config = {"vae": asdict(cfg), "seeds": seeds}
    return _fit(_vae_loop, config, res.vae_workers, res.vae_cpus_per_worker, run_name, storage,
                res.train_max_failures)


# ------------------------------------------------------------------ reward heads

def _training_set(cfg: RewardConfig, cell: Cell, sd: SeedData, run: Storage) -> tuple[PairSet, PairSet, PairSet]:
    """A cell's training pairs (real, plus its synthetic set from <run>/synthetic), validation pairs, and the
    real training pairs alone (what the MLP head standardizes with)."""
    pos, neg = torch.tensor(sd.train_pos), torch.tensor(sd.train_neg)
    train = PairSet(pos, neg)
    if cell.augments:
        syn = read_synthetic(run, cell.synthetic_name)
        if syn is None:
            raise ChecksumError(f"{run.uri}/synthetic/{cell.synthetic_name}.parquet: missing or corrupt")
        syn_pos, syn_neg = (torch.from_numpy(a) for a in syn)
        train = augmented_set(pos, neg, syn_pos, syn_neg, cell.factor, cell.seed, cfg.synthetic_weight)
    return train, PairSet(torch.tensor(sd.val_pos), torch.tensor(sd.val_neg)), PairSet(pos, neg)


def _fit_one(cfg: RewardConfig, cell: Cell, sd: SeedData, run: Storage, workers: Workers) -> tuple[dict, dict]:
    """One head -> (state, meta); a failed fit has no state and says why."""
    train, val, real = _training_set(cfg, cell, sd, run)
    fit = fit_reward_head(cfg, cell.head, train, val, cell.seed, sd.train_groups, real.pos, real.neg, workers=workers)
    metrics = {"val_acc": fit.best_val_acc, "best_step": fit.best_step, "steps": fit.steps, "train_pairs": len(train),
               "workers": workers.size}
    if cell.head == "linear":
        metrics["design"] = fit.history[0] if fit.history else None
    meta = {"config": fit.head.config(), "cell": asdict(cell), "failed": fit.failure, "metrics": metrics}
    return ({} if fit.failure else fit.head.state_dict()), meta


def _head_loop(config: dict) -> None:
    cfg = RewardConfig(**config["reward"])
    states, meta = _resume()
    run = Storage(config["run_uri"])
    seeds: dict[int, SeedData] = {sd.seed: sd for sd in config["seeds"]}
    threads = _set_threads()
    for cell in config["cells"]:
        if cell.name in meta:
            continue
        states[cell.name], meta[cell.name] = _fit_one(cfg, cell, seeds[cell.seed], run, _workers())
        m = meta[cell.name]
        m["metrics"]["threads"] = threads
        line = f"  head {cell.name}: " + (f"failed ({m['failed']})" if m["failed"] else
                                          f"validation accuracy {m['metrics']['val_acc']:.3f}")
        _report({"model": cell.name, "val_acc": m["metrics"]["val_acc"]}, states, meta,
                f"{line} ({len(meta)}/{len(config['cells'])})")


@ray.remote
def _linear_task(reward: dict, cell: Cell, sd: SeedData, run_uri: str, threads: int) -> tuple[dict, dict]:
    torch.set_num_threads(threads)
    return _fit_one(RewardConfig(**reward), cell, sd, Storage(run_uri), Workers())


def train_linear_heads(cfg: RewardConfig, cells: list[Cell], seeds: list[SeedData], run_uri: str, res: ResourcesConfig,
                     on_done: Callable[[Cell, dict, dict], None]) -> None:
    """Linear heads as independent Ray tasks (full-batch L-BFGS: nothing to gain from DDP), as many at once as
    the cluster fits; on_done(cell, state, meta) as each finishes, so a killed stage keeps what it stored."""
    by_seed = {sd.seed: sd for sd in seeds}
    threads = max(1, int(res.reward_cpus_per_worker))
    task = _linear_task.options(num_cpus=res.reward_cpus_per_worker, max_retries=res.train_max_failures)
    pending = {task.remote(asdict(cfg), cell, by_seed[cell.seed], run_uri, threads): cell for cell in cells}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        on_done(cell, *ray.get(done[0]))


def train_mlp_heads(cfg: RewardConfig, cells: list[Cell], seeds: list[SeedData], run_uri: str, run_name: str,
              storage: Storage, res: ResourcesConfig) -> tuple[dict, dict]:
    """Every head in one trainer run; an augmenting cell reads its synthetic set from <run_uri>/synthetic."""
    config = {"reward": asdict(cfg), "cells": cells, "seeds": seeds, "run_uri": run_uri}
    return _fit(_head_loop, config, res.reward_workers, res.reward_cpus_per_worker, run_name, storage,
                res.train_max_failures)


# ------------------------------------------------------------------ shared

def _listen_on(host: str, port: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock.detach()


def _store_on_master_address() -> None:
    """In a Train worker: torch's rendezvous store server listens on its master address when that address is
    loopback (a local run), not on every interface (its default). Uses TCPStore's own master_listen_fd."""
    rdzv = importlib.import_module("torch.distributed.rendezvous")   # the module, not torch.distributed.rendezvous()
    if getattr(rdzv, "_lens_ray_loopback", False):
        return
    plain = rdzv.TCPStore

    def store(host_name, port, world_size=None, is_master=False, **kw):
        try:
            loopback = ipaddress.ip_address(host_name).is_loopback
        except ValueError:
            loopback = False
        if is_master and loopback and kw.get("master_listen_fd") is None:
            kw["master_listen_fd"] = _listen_on(host_name, port)
        return plain(host_name, port, world_size, is_master, **kw)
    rdzv.TCPStore, rdzv._lens_ray_loopback = store, True


class _LoopbackBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config):
        worker_group.execute(_store_on_master_address)
        super().on_start(worker_group, backend_config)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """Ray Train's torch setup, with the rendezvous store bound to the master address on a local run."""
    @property
    def backend_cls(self):
        return _LoopbackBackend


def _set_threads() -> int:
    """In a Train worker: torch threads = the CPUs of the node it runs on / this run's workers on that node.
    The node's count is Ray's (it honours a container's CPU limit); the driver's cores say nothing of a
    worker node on a cluster whose head is smaller or larger."""
    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node), 0) or os.cpu_count() or 1
    threads = max(1, int(cpus) // max(1, ray.train.get_context().get_local_world_size()))
    torch.set_num_threads(threads)
    return threads


def _fit(loop, config: dict, workers: int, cpus: float, run_name: str, storage: Storage, max_failures: int,
         datasets: dict | None = None, with_metrics: bool = False):
    """One TorchTrainer run -> the models of its last checkpoint (and its last metrics, if asked)."""
    storage.make_folder()
    # Train's controller handles a worker's report (each fitted model's checkpoint) on its next poll of the
    # workers; Ray's default 2 s poll cost ~2 s per reward head (14 heads: 53 s -> 28 s). A value the user
    # set wins; the controller reads it from this process's environment when the fit starts.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    trainer = TorchTrainer(
        loop, train_loop_config=config, datasets=datasets, torch_config=LoopbackTorchConfig(),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=run_name, storage_path=storage.path(), storage_filesystem=storage.fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),   # its INFO: Train's log files
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
    _set_threads()
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
    net = _workers().wrap(head)
    shard = ray.train.get_dataset_shard("train")
    seen, t0, loss = 0, time.time(), torch.tensor(0.0)
    for epoch in range(first_epoch, config["epochs"]):
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, dtypes=torch.float32):
            n = len(batch["pos"])
            r = net(torch.cat([batch["pos"], batch["neg"]]))
            loss = LOSS[cfg.loss](r[:n], r[n:])
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


def train_head_streaming(cfg: RewardConfig, train_ds, dim: int, norm_mean: np.ndarray, norm_std: np.ndarray,
                       run_name: str, storage: Storage, res: ResourcesConfig, epochs: int = 1, seed: int = 0):
    """Train one head by streaming a Ray Dataset of {pos, neg} (n, d) batches; returns (head, metrics).
    A checkpoint after every epoch: a lost worker (FailureConfig) or a re-run with the same name resumes."""
    config = {"reward": asdict(cfg), "dim": dim, "norm_mean": norm_mean.tolist(), "norm_std": norm_std.tolist(),
              "epochs": epochs, "seed": seed}
    states, _, metrics = _fit(_stream_loop, config, res.reward_workers, res.reward_cpus_per_worker, run_name, storage,
                              res.train_max_failures, datasets={"train": train_ds}, with_metrics=True)
    head = RewardHead(dim, cfg.hidden_dim, cfg.depth, cfg.dropout)
    head.load_state_dict(states["head"])
    return head.eval(), metrics

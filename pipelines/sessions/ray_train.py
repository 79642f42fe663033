"""Session-model training on Ray Train: a `TorchTrainer` whose N workers run `run_session_loop`.

Each worker reads the sessions stage folder, builds the model with the run's seed, and trains it
data-parallel (`ray.train.torch.prepare_model` wraps the loss module in DDP: gloo on CPU, NCCL on
GPU) on its slice of every global batch (a deterministic split, see `pipelines/sessions/loop.py`).
Rank 0 validates after each epoch and broadcasts the score; every epoch ends with a checkpoint
reported to Ray Train (weights, optimizer, progress, each rank's RNG), from which a restarted
worker group (`FailureConfig(max_failures)`) or a new run over the same `out` folder resumes.
The driver loads the best weights of the final checkpoint; the caller evaluates and writes.

Ray start-up, the run config (checkpoint storage, restarts, worker niceness), `fit()` with progress
and error handling, and the worker's set-up and checkpoint reports are the runtime's, shared with the CTR
models (`pipelines/runtime/ray_driver.py`, `ray_worker.py`), and so is the config: `training.ray.{single_process, num_workers,
cpus_per_worker, use_gpu, address, worker_niceness, controller_poll_s, quiet}`.

Example::

    history = fit_sessions(Path("runs/s/sessions"), Path("runs/s/.tmp-train"), model, TrainConfig(), seed=0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pipelines.runtime.config import TrainConfig
from pipelines.runtime.errors import TrainingDivergedError
from pipelines.runtime.ray_driver import final_checkpoint, fit_with_progress, ray_init, ray_run_config
from pipelines.runtime.ray_worker import report_checkpoint, restored_checkpoint, worker_setup, write_progress
from pipelines.sessions.checkpoint import read_session_state
from pipelines.sessions.data import load_sessions
from pipelines.sessions.evaluate import validator
from pipelines.sessions.loop import TrainingError, run_session_loop
from pipelines.sessions.model import build_model

PROGRESS = ".progress.json"


@dataclass
class SessionJob:
    """What every worker needs (picklable, sent as `train_loop_config["job"]`)."""

    sessions: str
    out: str
    train: TrainConfig
    seed: int


class RaySessionIO:
    """A Ray Train worker: DDP through `prepare_model`, collectives on the worker group, checkpoints via `ray.train.report`."""

    def __init__(self, job: SessionJob) -> None:
        self.job = job
        self.ray, self.work_dir = True, Path(job.out)  # failure injection: SIGKILL, marker in the stage folder
        self.rank, self.world, self.device = worker_setup(job.train)

    def wrap(self, module: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(module, move_to_device=self.device)

    def restore(self) -> Path | None:
        return restored_checkpoint()

    def save(self, name: str, writer: Callable[[Path], Any], metrics: dict) -> None:
        report_checkpoint(name, writer, metrics, self.rank, asynchronous=False)

    def progress(self, epoch: int, total: int, loss: float) -> None:
        if self.rank == 0:
            write_progress(Path(self.job.out) / PROGRESS, {"epoch": epoch, "total": total, "loss": loss})

    def diverged(self, message: str) -> None:
        # every rank sees the same (all-reduced) loss, so every rank reports here: a marker checkpoint
        # carries the message to the driver's Result without a restart
        self.save("diverged", lambda f: (f / "diverged.txt").write_text(message), {"diverged": message})


def session_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: load the data, build the model with the run's seed, run the loop."""
    job: SessionJob = config["job"]
    io = RaySessionIO(job)
    data = load_sessions(Path(job.sessions))
    torch.manual_seed(job.seed)
    model = build_model(job.train.model, data)
    # every rank gets the validator (so every rank joins the score's broadcast); only rank 0 calls it
    run_session_loop(model, data, job.train, job.seed, io, validate=validator(data, job.train))


def fit_sessions(sessions: Path, out: Path, model: nn.Module, train: TrainConfig, seed: int,
                 progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train on Ray Train with `train.ray.num_workers` workers; load the best weights into `model`; return the history.

    Checkpoints go to `out/checkpoints/epoch_*` (Ray Train's storage); a second call with the same
    `out` resumes from the latest one.
    """
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    t0 = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ray_init(train)
    job = SessionJob(sessions=str(Path(sessions).resolve()), out=str(out), train=train, seed=seed)
    r = train.ray
    trainer = TorchTrainer(
        session_loop_per_worker, train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker={"CPU": r.cpus_per_worker}),
        run_config=ray_run_config(train, out))
    on_progress = (lambda info: progress(info["epoch"], info["total"], info["loss"])) if progress else None
    try:
        result = fit_with_progress(trainer, train, out / PROGRESS, on_progress)
    finally:
        (out / PROGRESS).unlink(missing_ok=True)
    metrics = result.metrics or {}
    if metrics.get("diverged"):
        raise TrainingDivergedError(metrics["diverged"])
    ckpt = final_checkpoint(result, out)
    if ckpt is None:
        raise TrainingError(f"{out / 'checkpoints'}: Ray Train finished without a checkpoint; see the worker logs.")
    state = read_session_state(ckpt)
    model.load_state_dict(state["best"] if state["best"] is not None else state["model"])
    history = state["progress"].history
    if state["best"] is not None and state["progress"].stopping.best_epoch is not None:
        history["best_epoch"] = state["progress"].stopping.best_epoch
    history.update(mode="ray", workers=r.num_workers, seconds=round(time.perf_counter() - t0, 2), checkpoint=str(ckpt.relative_to(out)) if ckpt.is_relative_to(out) else str(ckpt))
    return history

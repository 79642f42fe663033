"""A Ray Train worker's side of a run, the same for every model family: who this worker is and on which device,
the checkpoint to resume from, reporting a checkpoint, and rank 0's progress file for the driver's bar.

Called from inside `train_loop_per_worker` (the families' `RayIO` / `RaySessionIO`); the driver's side is
`pipelines/runtime/ray_driver.py`.

Example::

    rank, world, device = worker_setup(TrainConfig())
    folder = restored_checkpoint()                       # None on a fresh start
    report_checkpoint("step_00000010", lambda f: (f / "w.pt").write_bytes(b""), {"loss": 0.5}, rank)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from pipelines.runtime.config import TrainConfig
from pipelines.runtime.distributed import resolve_device


def worker_setup(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this worker; its torch threads set to the CPUs it holds (more threads than
    cores spin against each other). The device is the GPU Ray Train assigned, else `training.device`'s."""
    import ray.train

    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    if cfg.device != "cpu" and torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = resolve_device(cfg.device)
    return ctx.get_world_rank(), ctx.get_world_size(), device


def restored_checkpoint() -> Path | None:
    """The folder of the checkpoint Ray Train hands a (re)started worker group, or None on a fresh start.

    On local storage the registered checkpoint is read in place: `to_directory()` copies it into a temp folder
    shared by the ranks of a node (one copies under a file lock, the others wait), and a rank once read a
    half-copied file there after a planted worker death (test_session_ray, load ~10)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    import pyarrow.fs

    if isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem) and Path(ckpt.path).is_dir():
        return Path(ckpt.path)
    return Path(ckpt.to_directory())


def report_checkpoint(name: str, writer: Callable[[Path], Any], metrics: dict, rank: int,
                      asynchronous: bool = True) -> None:
    """Write this rank's part of checkpoint `name` with `writer(folder)` and report it to Ray Train with `metrics`
    (None values left out). Asynchronous: Ray copies the folder to storage and hands the report to its controller
    in a background thread, so the step loop does not wait for the controller's poll (reports keep their order,
    and the last one is flushed before the worker ends); else the call returns once the report is taken."""
    import ray.train
    from ray.train import Checkpoint, CheckpointUploadMode

    tmp = Path(tempfile.mkdtemp(prefix=f"ckpt-{name}-r{rank}-"))
    metrics = {k: v for k, v in metrics.items() if v is not None}
    try:
        writer(tmp)
        if asynchronous:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)), checkpoint_dir_name=name,
                             checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=True)
            return
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)), checkpoint_dir_name=name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def write_progress(path: Path, info: dict) -> None:
    """Replace the progress file the driver polls (`ray_driver.fit_with_progress`) with `info`, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)

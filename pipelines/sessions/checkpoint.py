"""Checkpoints of the session-model loop: weights, optimizer, progress (epoch, early stopping), RNG.

One checkpoint folder holds:

    session_state.pt      rank 0: model and optimizer state dicts, the best weights so far, progress
    rng_rank<r>.pt        every rank: its torch RNG and the loop's two generators (batch order, negatives)

Ray Train merges the folders the workers report into one, so a Ray checkpoint and a local one hold the
same files. Everything is read back with `torch.load(weights_only=True)`. RNG state and the atomic publishing
of a folder are the runtime's (`pipelines/runtime/checkpoint.py`), shared with the CTR models.

Example:
    >>> p = SessionProgress(epoch=2)
    >>> SessionProgress.from_dict(p.to_dict()).epoch
    2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.runtime.checkpoint import ProgressRecord, rank_file, restore_rng, rng_state
from pipelines.runtime.early_stopping import EarlyStopping

STATE = "session_state.pt"
RNG = "rng_rank{rank}.pt"


@dataclass
class SessionProgress(ProgressRecord):
    """Where training is: epochs done, steps done, early-stopping state and the history so far; inside an epoch,
    its batches done and the sums of their losses (the epoch's mean, and the running `log_every` mean)."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    epoch_loss: float = 0.0
    log_loss: float = 0.0
    log_n: int = 0
    stopping: EarlyStopping = field(default_factory=EarlyStopping)
    history: dict[str, Any] = field(default_factory=lambda: {"loss": [], "validation": []})


def write_session_checkpoint(folder: Path, rank: int, model: nn.Module, opt: torch.optim.Optimizer,
                             progress: SessionProgress, best_state: dict | None, generators: dict[str, torch.Generator]) -> Path:
    """This rank's part of a checkpoint into `folder` (rank 0 also writes the weights and progress)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(generators), folder / RNG.format(rank=rank))
    if rank == 0:
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
        torch.save({"model": cpu(model.state_dict()), "optimizer": opt.state_dict(),
                    "best": cpu(best_state) if best_state is not None else None,
                    "progress": json.dumps(progress.to_dict())}, folder / STATE)
    return folder


def read_session_state(folder: Path) -> dict[str, Any]:
    """The rank-0 part of a checkpoint: {"model", "optimizer", "best", "progress": SessionProgress}."""
    blob = torch.load(Path(folder) / STATE, weights_only=True, map_location="cpu")
    blob["progress"] = SessionProgress.from_dict(json.loads(blob["progress"]))
    return blob


def restore_session_checkpoint(folder: Path, rank: int, model: nn.Module, opt: torch.optim.Optimizer,
                               generators: dict[str, torch.Generator]) -> tuple[SessionProgress, dict | None]:
    """Load weights, optimizer and this rank's RNG from `folder`; return the progress and the best weights."""
    blob = read_session_state(folder)
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    restore_rng(torch.load(rank_file(folder, RNG, rank), weights_only=True), generators)
    return blob["progress"], blob["best"]

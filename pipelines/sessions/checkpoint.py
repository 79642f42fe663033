"""Checkpoints of the session-model loop: weights, optimizer, progress (epoch, early stopping), RNG.

One checkpoint folder holds:

    session_state.pt      rank 0: model and optimizer state dicts, the best weights so far, progress
    rng_rank<r>.pt        every rank: its torch RNG and the loop's two generators (batch order, negatives)

Ray Train merges the folders the workers report into one, so a Ray checkpoint and a local one hold the
same files. Everything is read back with `torch.load(weights_only=True)`.

Example:
    >>> p = SessionProgress(epoch=2)
    >>> SessionProgress.from_dict(p.to_dict()).epoch
    2
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.runtime.early_stopping import EarlyStopping

STATE = "session_state.pt"


@dataclass
class SessionProgress:
    """Where training is: epochs done, steps done, early-stopping state and the history so far."""

    epoch: int = 0
    step: int = 0
    stopping: EarlyStopping = field(default_factory=EarlyStopping)
    history: dict[str, Any] = field(default_factory=lambda: {"loss": [], "validation": []})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SessionProgress":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["stopping"] = EarlyStopping.from_dict(kw.get("stopping"))
        return cls(**kw)


def write_session_checkpoint(folder: Path, rank: int, model: nn.Module, opt: torch.optim.Optimizer,
                             progress: SessionProgress, best_state: dict | None, generators: dict[str, torch.Generator]) -> Path:
    """This rank's part of a checkpoint into `folder` (rank 0 also writes the weights and progress)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng_rank{rank}.pt")
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
    mine = Path(folder) / f"rng_rank{rank}.pt"
    rng = torch.load(mine if mine.exists() else Path(folder) / "rng_rank0.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    for k, g in generators.items():
        g.set_state(rng[k])
    return blob["progress"], blob["best"]


def publish_local(parent: Path, name: str, writer, keep: int) -> Path:
    """Write a checkpoint into a temporary folder, rename it to `parent/name`, keep the newest `keep`."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    writer(tmp)
    final = parent / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in parent.glob("epoch_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_local(parent: Path) -> Path | None:
    """The newest complete `epoch_*` checkpoint folder under `parent`, if any."""
    found = sorted(p for p in Path(parent).glob("epoch_*") if (p / STATE).exists())
    return found[-1] if found else None

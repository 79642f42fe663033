"""Training checkpoints: sharded model + fused optimizer state (torch.distributed.checkpoint), the
dense optimizer, the data position, RNG state, DSL state and the training history.

Layout of one checkpoint folder (each rank writes its own files, so a Ray Train checkpoint merged
from several workers, or one local folder, holds the same thing):

    .metadata, __<rank>_0.distcp     DCP: {"model": state_dict, "fused": fused optimizer state}
    dense_optimizer.pt               rank 0 (dense params are replicated)
    train_state_rank<r>.pt           position (epoch, batch, step), RNG, early-stopping state, DSL
    history.json                     rank 0: loss and validation curves so far

Everything is read back with `torch.load(weights_only=True)` or DCP. RNG state and the atomic publishing of a
folder are the runtime's (`pipelines/runtime/checkpoint.py`), shared with the session models.

Example:
    >>> s = TrainState(step=3)
    >>> TrainState.from_dict(s.to_dict()).step
    3
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch import nn

from pipelines.runtime.checkpoint import ProgressRecord, rank_file, restore_rng, rng_state
from pipelines.runtime.early_stopping import EarlyStopping
from pipelines.runtime.errors import CheckpointMismatchError

DENSE_OPT = "dense_optimizer.pt"
HISTORY = "history.json"
STATE = "train_state_rank{rank}.pt"


@dataclass
class TrainState(ProgressRecord):
    """Where training is: the next batch to read (`epoch`, `batch`), steps done, early-stopping state and the
    name of the best validation epoch's checkpoint (the one the run reports and exports)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    stopping: EarlyStopping = field(default_factory=EarlyStopping)
    best_checkpoint: str | None = None
    history: dict[str, list] = field(default_factory=lambda: {"train": [], "validation": []})


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _states(model: nn.Module) -> dict[str, Any]:
    sd: dict[str, Any] = {"model": model.state_dict()}
    fused = getattr(model, "fused_optimizer", None)
    if fused is not None:
        sd["fused"] = fused.state_dict()
    return sd


def write_checkpoint(folder: Path, model: nn.Module, dense_opt: torch.optim.Optimizer, state: TrainState,
                     dsl_state: dict | None = None) -> Path:
    """Write this rank's part of a checkpoint into `folder` (collective: every rank calls it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dcp.save(_states(model), checkpoint_id=str(folder))
    rank = _rank()
    torch.save({"state": json.dumps(state.to_dict()), "rng": rng_state(), "dsl": dsl_state},
               folder / STATE.format(rank=rank))
    if rank == 0:
        torch.save(dense_opt.state_dict(), folder / DENSE_OPT)
        (folder / HISTORY).write_text(json.dumps(state.history, indent=1) + "\n")
    return folder


def read_checkpoint(folder: Path, model: nn.Module, dense_opt: torch.optim.Optimizer) -> tuple[TrainState, dict | None]:
    """Restore model, both optimizers and RNG from `folder`; return the training state and DSL state."""
    folder = Path(folder)
    sd = _states(model)
    try:
        dcp.load(sd, checkpoint_id=str(folder))
    except (CheckpointException, ValueError, RuntimeError) as err:  # DCP: a table's size or a key differs
        why = str(err).strip().splitlines()[-1][:200]
        raise CheckpointMismatchError(f"{folder}: cannot resume, the checkpoint was written for another model or embedding "
                                      f"plan ({why}); delete {folder.parent} or train into a new output folder") from None
    model.load_state_dict(sd["model"])
    if "fused" in sd:
        model.fused_optimizer.load_state_dict(sd["fused"])
    dense_opt.load_state_dict(torch.load(folder / DENSE_OPT, weights_only=True))
    blob = torch.load(rank_file(folder, STATE, _rank()), weights_only=True)
    restore_rng(blob["rng"])
    return TrainState.from_dict(json.loads(blob["state"])), blob.get("dsl")


def load_weights(folder: Path, model: nn.Module) -> nn.Module:
    """Load a checkpoint's model weights into an unsharded model (no process group needed)."""
    sd = {"model": model.state_dict()}
    dcp.load(sd, checkpoint_id=str(folder))
    model.load_state_dict(sd["model"])
    return model


def read_state(folder: Path) -> TrainState:
    """The training state saved in a checkpoint folder (rank 0's), without loading any weights."""
    blob = torch.load(Path(folder) / STATE.format(rank=0), weights_only=True)
    return TrainState.from_dict(json.loads(blob["state"]))


def read_history(folder: Path) -> dict[str, list]:
    p = Path(folder) / HISTORY
    return json.loads(p.read_text()) if p.exists() else {"train": [], "validation": []}

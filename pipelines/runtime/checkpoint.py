"""What every family's checkpoint shares: RNG state per rank, and folders published atomically.

A checkpoint folder is written under a hidden temporary name and renamed into place when complete
(`publish`), so a killed writer never leaves a half checkpoint under its final name; `latest` finds the
newest complete one. Each rank saves its own RNG state (`rng_state` / `restore_rng`: torch, CUDA when
present, and any named `torch.Generator`s of the loop), read back with `weights_only=True`. What a
checkpoint holds beside that is the family's (`pipelines/ctr/checkpoint.py`: DCP shards of a DMP model;
`pipelines/sessions/checkpoint.py`: one state dict of a DDP model).

Example:
    >>> import tempfile
    >>> parent = Path(tempfile.mkdtemp())
    >>> for step in (1, 2, 3):
    ...     _ = publish(parent, f"step_{step}", lambda f: (f / "done").write_text("1"), keep=2)
    >>> sorted(p.name for p in parent.iterdir()), latest(parent, "step_*", "done").name
    (['step_2', 'step_3'], 'step_3')
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from pipelines.runtime.early_stopping import EarlyStopping


class ProgressRecord:
    """Mixin of a training loop's progress dataclass (it has a `stopping: EarlyStopping` field): to and from the
    plain dict a checkpoint stores; keys the class no longer has are ignored on the way back."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["stopping"] = EarlyStopping.from_dict(kw.get("stopping"))
        return cls(**kw)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    """This process's RNG state: torch's, CUDA's when present, and each of `generators` by name."""
    rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in (generators or {}).items()}}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def restore_rng(rng: dict[str, torch.Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    """Set the RNG state `rng_state` saved (CUDA only where present; each generator by its name)."""
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    for k, g in (generators or {}).items():
        g.set_state(rng[k])


def rank_file(folder: Path, template: str, rank: int) -> Path:
    """`folder/template.format(rank=rank)`, or rank 0's when this rank has none (resumed with more workers)."""
    mine = Path(folder) / template.format(rank=rank)
    return mine if mine.exists() else Path(folder) / template.format(rank=0)


def publish(parent: Path, name: str, writer: Callable[[Path], Any], keep: int, pattern: str | None = None,
            protect: str | None = None) -> Path:
    """Write a checkpoint with `writer(tmp)` into a fresh hidden folder under `parent`, rename it to `parent/name`
    (replacing one of that name), then delete all but the newest `keep` folders matching `pattern` (default:
    `name`'s prefix up to its first '_', plus '_*'), never `protect` (e.g. the best epoch's)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        writer(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = parent / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pattern = pattern or name.split("_")[0] + "_*"
    for old in sorted(p for p in parent.glob(pattern) if p.is_dir())[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(parent: Path, pattern: str, marker: str | None = None) -> Path | None:
    """The newest (by name) folder under `parent` matching `pattern` (holding `marker` when given), if any."""
    found = sorted(p for p in Path(parent).glob(pattern) if p.is_dir() and (marker is None or (p / marker).exists()))
    return found[-1] if found else None

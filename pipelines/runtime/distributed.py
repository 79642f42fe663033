"""Devices and process groups of the training loops: the device a setting names, a world-size-1 group for
one-process runs, DMP sharding, and the two collectives both loops take (the mean of a loss, rank 0's value).

The group itself is `embeddings.sharding.single_process_group` (the one place a process starts its own);
Ray Train starts the workers' groups. The dense optimizer of both loops is `embeddings.sharding.dense_optimizer`.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> with local_process_group():
    ...     global_mean(torch.tensor(2.0), world=1), broadcast_from_rank0({"score": 0.5}, world=1)
    (2.0, {'score': 0.5})
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from embeddings.config import EmbeddingsConfig
from embeddings.sharding import fbgemm_model, single_process_group
from features.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`training.device`: 'auto' → this worker's GPU when CUDA is present, else the CPU; 'cuda' without a visible
    GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if torch.cuda.device_count() > 1 else 0)
    return torch.device("cpu")


@contextlib.contextmanager
def local_process_group(device: torch.device | None = None) -> Iterator[None]:
    """A world-size-1 process group in this process while the block runs (gloo on CPU, nccl on GPU); reuses one
    already up (and then leaves it up)."""
    if dist.is_initialized():
        yield
        return
    single_process_group("nccl" if device is not None and device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_model(model: nn.Module, emb_cfg: EmbeddingsConfig, device: torch.device) -> nn.Module:
    """Wrap `model` in DMP over the current process group with a fused FBGEMM optimizer on its tables
    (`embeddings.sharding.fbgemm_model`: TorchRec planner, `apply_optimizer_in_backward`)."""
    return fbgemm_model(model, emb_cfg, device=device, pg=dist.group.WORLD)


def global_mean(x: torch.Tensor, world: int) -> float:
    """The mean of a scalar over the `world` ranks (all-reduced; itself alone in one process)."""
    if world > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= world
    return float(x)


def broadcast_from_rank0(value: Any, world: int) -> Any:
    """Rank 0's `value` on every rank (a picklable object; itself in one process)."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

"""Process groups, device choice, DMP sharding and the dense optimizer of the training loop.

Sharding is `embeddings.sharding.fbgemm_model` (TorchRec planner + DMP, FBGEMM fused sparse
optimizer); the dense optimizer is a plain torch Adam/Adagrad over the parameters the fused
optimizer does not own, so its state dict loads with `weights_only=True`.

Example:
    >>> with local_process_group():                                # doctest: +SKIP
    ...     dmp = shard_model(model, EmbeddingsConfig(), torch.device("cpu"))
    ...     opt = dense_optimizer(dmp, "adam", 1e-3)
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from embeddings.config import EmbeddingsConfig


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when present (this worker's local GPU), else cpu."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if torch.cuda.device_count() > 1 else 0)
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_process_group(device: torch.device | None = None) -> Iterator[None]:
    """A world-size-1 process group in this process (gloo on CPU, nccl on GPU); reuses one already up."""
    if dist.is_initialized():
        yield
        return
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    store = dist.TCPStore("127.0.0.1", _free_port(), 1, is_master=True)
    dist.init_process_group(backend=backend, store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_model(model: nn.Module, emb_cfg: EmbeddingsConfig, device: torch.device) -> nn.Module:
    """Wrap `model` in DMP over the current process group with a fused FBGEMM optimizer on its tables
    (`embeddings.sharding.fbgemm_model`: TorchRec planner, `apply_optimizer_in_backward`)."""
    from embeddings.sharding import fbgemm_model

    return fbgemm_model(model, emb_cfg, device=device, pg=dist.group.WORLD)


def dense_optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """Adam/Adagrad over the parameters the fused optimizer does not own."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    params = [p for _, p in in_backward_optimizer_filter(model.named_parameters())]
    return (torch.optim.Adagrad if name == "adagrad" else torch.optim.Adam)(params, lr=lr)

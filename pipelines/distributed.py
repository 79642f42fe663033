"""Shard a model with TorchRec's planner and DMP, FBGEMM fused sparse optimizer, dense optimizer.

Uses `embeddings.sharding.fbgemm_model` when present; otherwise the same recipe here:
`apply_optimizer_in_backward` on the embedding parameters (FBGEMM fuses the update into the
backward), `EmbeddingShardingPlanner.collective_plan`, `DistributedModelParallel`, and a plain
torch optimizer over the remaining (dense) parameters.

Example:
    >>> with local_process_group() as pg:                          # doctest: +SKIP
    ...     dmp = shard_model(model, EmbeddingsConfig(), torch.device("cpu"), batch_size=512)
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


def _sparse_optimizer(cfg: EmbeddingsConfig) -> tuple[type[torch.optim.Optimizer], dict]:
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    table = {"rowwise_adagrad": (RowWiseAdagrad, {"lr": cfg.learning_rate, "eps": 1e-8}),
             "sgd": (torch.optim.SGD, {"lr": cfg.learning_rate}),
             "adam": (torch.optim.Adam, {"lr": cfg.learning_rate})}
    if cfg.optimizer not in table:
        from models.errors import ModelError

        raise ModelError(f"embeddings.optimizer: '{cfg.optimizer}' is unknown; choose one of {', '.join(table)}")
    return table[cfg.optimizer]


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the model's TorchRec embedding modules (those the fused optimizer updates)."""
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

    out: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection)):
            out.extend(m.parameters())
    return out


def shard_model(model: nn.Module, emb_cfg: EmbeddingsConfig, device: torch.device, batch_size: int) -> nn.Module:
    """Wrap `model` in DMP over the current process group with a fused FBGEMM optimizer on its tables."""
    with contextlib.suppress(ImportError):
        from embeddings.sharding import fbgemm_model  # type: ignore[attr-defined]

        return fbgemm_model(model, emb_cfg, device=device, batch_size=batch_size)
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    opt_cls, kwargs = _sparse_optimizer(emb_cfg)
    apply_optimizer_in_backward(opt_cls, embedding_parameters(model), kwargs)
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    topology = Topology(world_size=world, local_world_size=min(local, world), compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size)
    sharders = get_default_sharders()
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    return DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)


def dense_optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """Adam/Adagrad over the parameters the fused optimizer does not own."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    params = [p for _, p in in_backward_optimizer_filter(model.named_parameters())]
    return (torch.optim.Adagrad if name == "adagrad" else torch.optim.Adam)(params, lr=lr)


def fused_optimizer(model: nn.Module):
    """The DMP's fused (in-backward) optimizer, whose state is part of every checkpoint."""
    return model.fused_optimizer

"""Wrap a model holding `PlanEmbeddings` (or any TorchRec EBC / EC) in DistributedModelParallel.

Lookups then run on FBGEMM's table-batched embedding kernels, the embedding tables are updated
by a FUSED sparse optimizer inside the backward pass (set with
`torchrec.optim.apply_optimizer_in_backward`), and the sharding plan comes from TorchRec's own
`EmbeddingShardingPlanner` over a `Topology` of the process group. The same code runs in one
process (gloo, world size 1, for tests) and in N Ray Train workers (whose process group Ray has
already made). On CPU, TorchRec offers data_parallel, table_wise and column_wise sharding (not
row_wise).

Dense parameters (MLPs, mixed-dim projections) are not touched by the fused optimizer; train
them with `dense_optimizer(dmp, lr)` (the one dense optimizer of every training loop: on a model without
fused tables it takes every parameter).

Example (tests/embeddings/test_sharding.py runs it)::

    dmp = fbgemm_model(model, EmbeddingsConfig(), torch.device("cpu"))
    opt = dense_optimizer(dmp, lr=1e-3)
    loss = loss_fn(dmp(batch)); loss.backward(); opt.step()
"""

from __future__ import annotations

import tempfile

import torch
import torch.distributed as dist
from torch import nn

from embeddings.config import EmbeddingsConfig
from embeddings.errors import EmbeddingError

CPU_SHARDING_TYPES = ("table_wise", "column_wise")  # data_parallel is offered too, but not on the fused kernel


def sparse_optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class TorchRec maps onto FBGEMM's fused update for `name`.

    Example:
        >>> sparse_optimizer_class("sgd").__name__
        'SGD'
    """
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    classes = {"rowwise_adagrad": RowWiseAdagrad, "sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    if name not in classes:
        raise EmbeddingError(f"embeddings.optimizer: '{name}' is not a fused sparse optimizer; use one of {', '.join(classes)}")
    return classes[name]


def _embedding_modules(model: nn.Module) -> list[nn.Module]:
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

    return [m for m in model.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))]


def single_process_group(backend: str = "gloo") -> dist.ProcessGroup:
    """The default process group, started as a world-size-1 group (`backend`: gloo, or nccl on GPU) when none
    exists: the one place a process starts a group of its own (Ray Train starts the workers' groups)."""
    if not dist.is_initialized():
        store_file = tempfile.NamedTemporaryFile(prefix="sparserec_pg_", delete=False)
        store_file.close()
        dist.init_process_group(backend, init_method=f"file://{store_file.name}", rank=0, world_size=1)
    return dist.group.WORLD


def fbgemm_model(model: nn.Module, cfg: EmbeddingsConfig, device: torch.device, pg: dist.ProcessGroup | None = None,
                 sharding_types: list[str] | None = None):
    """Wrap a model holding PlanEmbeddings (or any TorchRec EBC) in DMP so lookups run on FBGEMM TBE with a
    FUSED sparse optimizer (rowwise_adagrad | sgd | adam, lr from cfg) set through
    torchrec.optim.apply_optimizer_in_backward; sharding plan from TorchRec's planner (EmbeddingShardingPlanner +
    Topology); works in one process (gloo, world size 1) for tests and with N Ray workers.

    `pg`: the process group (default: the initialised default group, or a new world-size-1 gloo
    group). `sharding_types`: allowed TorchRec sharding types (default: table_wise, column_wise on
    CPU; table_wise, row_wise, column_wise on CUDA). Tables that are not data_parallel run on the
    FUSED compute kernel (FBGEMM TBE with the optimizer in its backward).

    Example::

        dmp = fbgemm_model(nn.Sequential(build_embeddings(plan)), EmbeddingsConfig(), torch.device("cpu"))
        dmp.plan                                      # the ShardingPlan TorchRec chose
    """
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
    from torchrec.distributed.planner.types import KernelConfig, ParameterConstraints, TopologyFactory, TrainerConfig
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    pg = pg if pg is not None else single_process_group()
    modules = _embedding_modules(model)
    if not modules:
        raise EmbeddingError("fbgemm_model: the model holds no TorchRec EmbeddingBagCollection or EmbeddingCollection")
    opt_cls = sparse_optimizer_class(cfg.optimizer)
    kwargs: dict = {"lr": cfg.learning_rate}
    if cfg.optimizer == "rowwise_adagrad":
        kwargs["eps"] = 1e-8
    for m in modules:
        apply_optimizer_in_backward(opt_cls, m.parameters(), kwargs)
    if sharding_types is None:
        sharding_types = list(CPU_SHARDING_TYPES) if device.type == "cpu" else ["table_wise", "row_wise", "column_wise"]
    constraints = {}
    for m in modules:
        configs = m.embedding_bag_configs() if hasattr(m, "embedding_bag_configs") else m.embedding_configs()
        for c in configs:
            if c.embedding_dim % 4:
                raise EmbeddingError(f"table '{c.name}': dim {c.embedding_dim} is not divisible by 4, which FBGEMM's "
                                     "fused TBE kernels require; use dims (default_dim, mixed_dim stored_dim) of 4, 8, 16, ...")
            kernels = None if "data_parallel" in sharding_types else ["fused"]
            constraints[c.name] = ParameterConstraints(sharding_types=list(sharding_types), compute_kernels=kernels)
    topology = TopologyFactory.create_topology(TrainerConfig(world_size=dist.get_world_size(pg)),
                                               kernel_config=KernelConfig(compute_device=device.type))
    sharders = [EmbeddingBagCollectionSharder(), EmbeddingCollectionSharder()]
    # a fixed reserve for dense parts: TorchRec's heuristic one warns that it over-estimates them
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints, debug=False,
                                       storage_reservation=FixedPercentageStorageReservation(0.15))
    plan = planner.collective_plan(model, sharders, pg)
    return DistributedModelParallel(module=model, env=ShardingEnv.from_process_group(pg), device=device,
                                    plan=plan, sharders=sharders)


def dense_optimizer(dmp: nn.Module, lr: float = 1e-3, name: str = "adam", weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (or Adagrad) over the parameters the fused optimizer does not update (MLPs, projections; every
    parameter of a model without fused tables). A plain torch optimizer: its state dict loads with
    `weights_only=True`. `weight_decay`: the optimizer's L2 weight decay.

    Example:
        >>> type(dense_optimizer(nn.Linear(2, 1), lr=0.1, name="adagrad")).__name__
        'Adagrad'
    """
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    if name not in ("adam", "adagrad"):
        raise EmbeddingError(f"training.dense_optimizer: '{name}' is not a dense optimizer; use adam or adagrad")
    params = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    return (torch.optim.Adagrad if name == "adagrad" else torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay)

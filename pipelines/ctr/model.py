"""Build a CTR model (DLRM, DCN-v2, logistic regression) from an embedding plan.

The sparse part comes from `embeddings.tables.build_embeddings(plan)` when that module is present
(it applies the plan's compression methods); otherwise a TorchRec `EmbeddingBagCollection` with
one dense table per `TableSpec`.

Example:
    >>> from embeddings.spec import EmbeddingPlan, TableSpec
    >>> from pipelines.runtime.config import ModelConfig
    >>> plan = EmbeddingPlan(tables=[TableSpec(name="t_C1", features=["C1"], rows=10, dim=4)])
    >>> m = build_ctr_model(plan, dense_in=2, cfg=ModelConfig(name="dcn"))
    >>> type(m).__name__
    'DCNv2'
"""

from __future__ import annotations

import importlib.util

from torch import nn

from embeddings.spec import EmbeddingPlan
from models.errors import ModelError
from pipelines.runtime.config import ModelConfig

CTR_MODELS = ("dlrm", "dcn", "lr")
LR_DIM = 4


def plan_features(plan: EmbeddingPlan) -> list[str]:
    """Features in the order the pooled output lists them (table order, then feature order)."""
    return [f for t in plan.tables for f in t.features]


def sparse_module(plan: EmbeddingPlan, dim: int | None = None, device: str = "cpu") -> nn.Module:
    """Pooled-embedding module of the plan (`dim` overrides every table's dim: a plain dense EBC, for LR)."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

    if dim is None and importlib.util.find_spec("embeddings.tables") is not None:
        from embeddings.tables import build_embeddings

        return build_embeddings(plan)
    others = sorted({t.method for t in plan.tables} - {"dense"})
    if others and dim is None:
        raise ModelError(f"embedding_plan.json: methods {others} need embeddings/tables.py, which is not installed; "
                         "plan with methods: [dense]")
    return EmbeddingBagCollection(device=device, tables=[
        EmbeddingBagConfig(name=t.name, embedding_dim=dim or t.dim, num_embeddings=t.rows, feature_names=list(t.features),
                           pooling=PoolingType.MEAN if t.pooling == "mean" else PoolingType.SUM)
        for t in plan.tables])


def build_ctr_model(plan: EmbeddingPlan, dense_in: int, cfg: ModelConfig) -> nn.Module:
    """The model named by `cfg.name` over the plan's tables (all tables must share one dim)."""
    if cfg.name not in CTR_MODELS:
        raise ModelError(f"training.model.name: '{cfg.name}' is not a CTR model; choose one of {', '.join(CTR_MODELS)}")
    n = len(plan_features(plan))
    if cfg.name == "lr":
        from models.baselines import LogisticRegression

        # FBGEMM kernels need dims divisible by 4; LR sums the 4 columns, so each id still has one weight in effect
        return LogisticRegression(sparse_module(plan, dim=LR_DIM), dense_in)
    dims = sorted({t.dim for t in plan.tables})
    if len(dims) != 1:
        raise ModelError(f"embedding_plan.json: tables have dims {dims}; {cfg.name} needs one output dim, "
                         "so let the planner project mixed dims up to embeddings.default_dim")
    if cfg.name == "dlrm":
        from models.dlrm import DLRM

        return DLRM(sparse_module(plan), n, dims[0], dense_in, cfg.dense_arch, cfg.over_arch, cfg.concat_embeddings,
                    cfg.over_dropout)
    from models.dcn import DCNv2

    return DCNv2(sparse_module(plan), n, dims[0], dense_in, cfg.dense_arch, cfg.over_arch, cfg.cross_layers, cfg.low_rank,
                 cfg.over_dropout)

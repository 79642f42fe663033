"""Settings of the embedding stage: memory budget, methods the planner may use, DSL.

Example:
    >>> EmbeddingsConfig(compression_ratio=10).default_dim
    16
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the names of embeddings/compression's registry (known_methods()), listed here so that a config is
# checked without importing torch; tests/embeddings/test_config_names.py keeps the two equal
METHOD_NAMES = ("dense", "drop", "fp16", "hashing", "int4", "int8", "mixed_dim", "pruned", "qr")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DSLConfig(_Strict):
    """Dynamic Sparse Learning: sparse from step 0 under a fixed budget of active weights."""

    enabled: bool = False
    # exact: every weight masked at every step (the budget holds between updates too; 2.9-4.3x a
    #   plain FBGEMM step on CPU). lazy: nothing per step (the plain step), inactive weights train
    #   freely and each update grows the ones that trained furthest, prunes the smallest active,
    #   zeroes the rest of the changed rows; a final exact phase makes the exported model honour the
    #   budget (budget enforced at every update and at the end, not between). row: whole rows, the
    #   physical table holds only the budget's rows (real memory saved in training). See
    #   embeddings/dsl/modes.py. Default exact, from the grid at 80% sparsity (test split, exported
    #   models, 2026-12-07), ml-100k seeds 0-2: exact 0.6947 (0.31x dense bytes), lazy 0.6987
    #   (0.30-0.32x), row 0.6724 (0.16x; 0.6745 with a learned sentinel): row keeps no row for 80% of
    #   users and items, which ml-100k needs. Per step amortised at ΔT=100 (benchmarks/kernels.py
    #   --threads 1 --clock cpu, 300k and 1M x 64): row 0.67-0.71x with 20-id bags, 0.99-1.02x with
    #   one-id bags and new ids every step (1.15-1.20x when 8 batches repeat); lazy 1.30-1.46x with
    #   20-id bags, 1.30-4.4x with one-id bags (2.2x at 300k with new ids every step) (its update is a pass over the looked-up rows; with
    #   one-id bags it outweighs an interval of steps). So: lazy
    #   where quality matters and ids are multi-valued or ΔT is long, row where memory or multi-id
    #   speed matters and the head carries the signal; exact when the budget must hold at every step.
    mode: Literal["exact", "lazy", "row"] = Field(default="exact", description="exact | lazy | row (see embeddings/dsl/modes.py)")
    density: float = Field(default=0.2, gt=0.0, le=1.0, description="active share of each table's weights")
    update_every: int = Field(default=100, ge=1, description="ΔT: steps between prune/grow updates")
    # 0.1, not RigL's 0.3: at 80% sparsity on MovieLens-100K (2 epochs, 20 updates, 5 seeds) AUC was
    # 0.6896 at 0.3, 0.6935 at 0.1, 0.6946 at 0.05; on the generated CTR logs 0.8244 vs 0.8246
    # (benchmarks/compression_tradeoff.py's setting). Short runs with few updates lose more to the
    # churn of large exchanges (regrown weights restart at zero) than they gain from exploring.
    initial_exchange: float = Field(default=0.1, ge=0.0, le=1.0, description="fraction of active weights exchanged at the first update")
    end_fraction: float = Field(default=0.8, gt=0.0, le=1.0, description="share of training after which no more exchange happens")
    init: Literal["random", "frequency"] = Field(default="frequency", description="mask initialisation: random | frequency")
    grad_window: int | None = Field(default=None, ge=1, description="accumulate gradient magnitude over the last N steps before each update (None: the whole interval; 1: the paper's last batch)")
    final_exact_steps: int | None = Field(default=None, ge=0, description="lazy mode: the last N steps train as exact so the exported model honours the budget (None: the last interval, update_every steps)")
    # 0.05: see benchmarks/compression_tradeoff.py --dsl-modes (exported-model AUC beside bytes)
    export_error: float | None = Field(default=0.05, ge=0.0, lt=1.0, description="exact / lazy export: the relative error ||W - served|| / ||W|| a table may take to be stored smaller (int8 / int4 rows, lowest-norm rows dropped); None: fp16 rows of every row with an active weight")
    grad_steps: int | None = Field(default=None, ge=1, description="accumulate on only this many steps of each interval (or window), one seeded random step in each of as many equal parts, so the evidence still spans the interval at a fraction of the cost (None: every step in exact mode and in lazy's final exact phase, 10 in row; lazy takes none between updates)")


class EmbeddingsConfig(_Strict):
    """How embedding tables are sized. Give either `budget_bytes` or `compression_ratio` (or neither: dense)."""

    default_dim: int = Field(default=16, ge=1)
    budget_bytes: int | None = Field(default=None, gt=0)
    compression_ratio: float | None = Field(default=None, ge=1.0)
    methods: list[str] = Field(default_factory=lambda: ["dense", "hashing", "qr", "mixed_dim", "int8", "int4", "drop"])
    max_rows: int | None = Field(default=None, ge=1, description="cap on rows of any one table")
    dsl: DSLConfig = Field(default_factory=DSLConfig)
    optimizer: Literal["rowwise_adagrad", "sgd", "adam"] = Field(default="rowwise_adagrad", description="fused sparse optimizer: rowwise_adagrad | sgd | adam")
    learning_rate: float = Field(default=0.05, gt=0.0)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(f"method '{unknown[0]}' is unknown; use any of {', '.join(METHOD_NAMES)}")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> "EmbeddingsConfig":
        if self.budget_bytes is not None and self.compression_ratio is not None:
            raise ValueError("give either budget_bytes or compression_ratio, not both")
        return self

"""Dynamic Sparse Learning on TorchRec / FBGEMM embedding tables (see `controller` for the method).

Modules, one idea each:
- `modes`: the three modes (`exact` | `lazy` | `row`) behind `make_controller`, and `attach`;
- `controller`: `DSLController` (mode `exact`), the per-step and per-update driver under one global budget;
- `lazy`: `LazyDSLController`, periodic projection with a final exact phase;
- `lazy_fused` / `lazy_kernels`: lazy's update on CPU float32 tables through fused numba kernels (same results);
- `rows`: `RowDSLController`, whole rows, the physical table holding only the budget's rows;
- `hooks`: which rows a batch looked up, the pooled gradient hook (one-id bag masks, gradient evidence);
- `remask`: re-masking the rows of multi-id bags, the bookkeeping of one update, collectives;
- `masks`: pure mask functions (initial masks, the prune/grow rule, exact k-th value selection);
- `schedule`: the cosine exchange schedule;
- `tables`: where the weights and optimizer state of each table live (EBC, DMP shards, bare TBE).

Example:
    >>> from embeddings.dsl import DSLController, exchange_fraction
    >>> from embeddings.config import DSLConfig
    >>> exchange_fraction(0, 100, DSLConfig(initial_exchange=0.1))
    0.1
"""

from embeddings.dsl.controller import DSLController
from embeddings.dsl.hooks import sampled_steps
from embeddings.dsl.masks import prune_and_grow
from embeddings.dsl.schedule import exchange_fraction
from embeddings.dsl.tables import DSLError
from embeddings.dsl.lazy import LazyDSLController
from embeddings.dsl.rows import RowDSLController
from embeddings.dsl.modes import attach, make_controller

__all__ = ["DSLController", "DSLError", "LazyDSLController", "RowDSLController", "attach", "exchange_fraction",
           "make_controller", "prune_and_grow", "sampled_steps"]

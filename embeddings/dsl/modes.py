"""The three DSL modes behind one constructor, and where each one observes the batch.

| mode | unit | between updates | per-step cost | training memory |
|---|---|---|---|---|
| `exact` | weight | budget held at every step (masked gradient, re-masked rows) | 2.9-4.3x a plain FBGEMM step on CPU | full table + masks |
| `lazy` | weight | every looked-up row's inactive weights train freely; zeroed at every update and in a final exact phase | nothing (the plain step); the update passes over the rows whose row-wise optimizer state moved, growing the inactive weights that trained furthest | full table + masks |
| `row` | row | physical table = the budget's rows; inactive ids read a sentinel row (zero, or one learned row) | an int32 remap + sampled evidence | budget rows + one int32 per id |

Measured 2026-12-07 (benchmarks/kernels.py --threads 1 --clock cpu --grad-steps 0 --repeats 3, ΔT =
100, exchange 0.1, seed 0, the variants in lockstep with the order rotating every step; load 41-72
on 2 cores), amortised ratio to a plain FBGEMM step (per-step ratio without the update in brackets).
exact and lazy from runs of several variants; row from runs of row beside the plain step alone:

| table, batch | bags | distinct batches | exact | lazy | row |
|---|---|---|---|---|---|
| 300k x 64, 2048 | 1 id | 100 | 5.35 (2.91) | 2.21 (1.00); 3.09 before the gather share 0.6 | 0.99-1.04 (0.92-0.97) |
| 300k x 64, 2048 | 1 id | 8 | - | 1.30 (0.97) | 1.15-1.20 (1.10-1.16) |
| 300k x 64, 2048 | 20 ids | 8 | 4.62 (4.26) | 1.30 (0.98) | 0.67 (0.60-0.63) |
| 1M x 64, 4096 | 1 id | 100 | 7.54 (2.95) | 3.80-4.36 (0.99-1.07) | 1.01-1.02 (0.92) |
| 1M x 64, 4096 | 20 ids | 8 | - | 1.46 (0.97) | 0.71 (0.66) |

(lazy's per-step 1.00 is beside the plain step alone; in a four-variant run it read 1.21.) A lazy step IS
the plain step; its update is one pass over the changed rows plus the prune / grow selection, and
costs what it costs: 20-40 ms when an interval looks up few rows, 150-200 ms at 300k rows and
600 ms at 1M rows when it looks up most of them (a whole-table pass: |w|, two comparisons and two
`nonzero` per weight, 5-9 ns per weight on this CPU, against about 6 ns per looked-up weight for a
plain one-id step, so with one-id bags the update outweighs an interval). A row step is the plain
step on the compact table plus the remap (an `index_select` and a cast, 60-80 us under this load:
with 8 repeated batches the plain step runs from a hot cache and the remap shows as 10-16%; with
new ids every step the smaller table's lookups pay for it). Before these changes (fixed order,
300k one-id, 8 batches, load 6-12): lazy 1.94 (per step 1.18: batch references and 10 sampled
evidence steps, 14% of an interval in the hook; update 46-61 ms: the looked-up rows' projection,
cache and selection), row 1.18.

Lazy's update through fused numba kernels (#15; `embeddings.dsl.lazy_fused`, CPU float32 tables
where numba is installed; the figures above are its torch-op update, which CUDA and a venv without
numba still take). Same command with `--modes lazy,lazy-torch --repeats 5` (both beside the plain
step in one run), three runs at load 7-18 on 2 cores (the 20-id rows also a fourth, lazy alone);
ratio to a plain step over an interval with the update, and in brackets 1 + update / (ΔT plain
steps), which leaves out the per-step noise:

| table, batch | bags | distinct batches | lazy, fused | lazy, torch ops | fused update |
|---|---|---|---|---|---|
| 300k x 64, 2048 | 1 id | 100 | 1.50-1.59 (1.53-1.57) | 2.73-3.05 (2.77-3.04) | 31-37 ms |
| 300k x 64, 2048 | 1 id | 8 | 1.16-1.29 (1.16-1.23) | 1.40-1.47 (1.36-1.48) | 11-13 ms |
| 300k x 64, 2048 | 20 ids | 8 | 1.10-1.12 (1.09-1.10) | 1.28-1.31 (1.29-1.31) | 45-48 ms |
| 1M x 64, 4096 | 1 id | 100 | 1.78-2.01 (1.77-1.95) | 3.97-4.45 (3.88-4.43) | 96-107 ms |
| 1M x 64, 4096 | 20 ids | 8 | 1.08-1.14 (1.11-1.13) | 1.29-1.33 (1.35-1.39) | 126-146 ms |

The fused update is 2.0-3.8x faster than the torch ops, the same model (tested step by step, ties
included). What is left is memory traffic the rule needs: every weight of every looked-up row read
and written once (the projection, the growth evidence and the prune cache in one pass: ~2 ns per
weight of scattered rows at this load, rows prefetched ahead), and the exchange's scattered writes
(10% of the budget pruned anywhere in the table and grown in the looked-up rows, 2 x 384k weights
at 300k rows: ~10 ms). With one-id bags and new ids every step an interval of plain steps costs
about as much as that (0.6 ms x 100 at 300k rows, 112k rows looked up), so ≤ 1.10x is out of
reach there on this CPU with one thread; with 20-id bags the update is 9-12% of an interval.

Quality, ml-100k at 80% sparsity (benchmarks/compression_tradeoff.py's model and data: test split,
exported model, seeds 0 / 1 / 2): exact 0.6970 / 0.6900 / 0.6970 (mean 0.6947); lazy 0.7019 /
0.6956 / 0.6987 (0.6987: growing the weights that trained furthest, at their values, beats exact's
zero-started growth; the fused update gives 0.7019 at seed 0 too); row (zero sentinel, grown rows at zero) 0.6696 / 0.6711 / 0.6766 (0.6724;
fresh uniform init 0.6676 at seed 0; a learned sentinel 0.6759 / 0.6792 / 0.6684 (0.6745), and
0.6666 when grown rows start as that sentinel): row's gap to exact is structural (no row for 80%
of users and items), not its exchange rule. Generated ctr (60k rows, seeds 0 / 1): exact 0.8229 /
0.8227, lazy 0.8259 / 0.8239.

`exact` and `lazy` observe the embedding collection's own input and output (`.ebc`; lazy only in
its final exact phase); `row` observes the plan module (virtual ids, before the remap).

Example:
    >>> from embeddings.config import DSLConfig
    >>> controller_class(DSLConfig(mode="lazy")).__name__
    'LazyDSLController'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from embeddings.config import DSLConfig
from embeddings.dsl.controller import DSLController
from embeddings.dsl.lazy import LazyDSLController
from embeddings.dsl.rows import RowDSLController

__all__ = ["controller_class", "make_controller", "attach"]


def controller_class(cfg: DSLConfig) -> type:
    """The controller class of `cfg.mode`."""
    return {"exact": DSLController, "lazy": LazyDSLController, "row": RowDSLController}[cfg.mode]


def make_controller(model: nn.Module, cfg: DSLConfig, total_steps: int, frequencies: Mapping[str, Tensor] | None = None,
                    *, tables: Iterable[str] | None = None, densities: Mapping[str, float] | None = None,
                    optimizers: Iterable[torch.optim.Optimizer] = (), seed: int = 0):
    """The controller of `cfg.mode` for `model` (`tables` / `densities` apply to exact and lazy;
    row mode takes its tables and row budgets from the plan's `params.rows_kept`)."""
    if cfg.mode == "row":
        return RowDSLController(model, cfg, total_steps, frequencies, optimizers=optimizers, seed=seed)
    return controller_class(cfg)(model, cfg, total_steps, frequencies, tables=tables, densities=densities,
                                 optimizers=optimizers, seed=seed)


def attach(model: nn.Module, ctl) -> nn.Module | None:
    """Register `ctl.observe` as a forward hook (training mode only) where its mode observes; returns
    the module hooked (None when the model has none: the caller then calls `observe` itself)."""
    if isinstance(ctl, RowDSLController):
        target = next((m for m in model.modules() if isinstance(getattr(m, "row_remaps", None), nn.Module)
                       and len(list(m.row_remaps.buffers()))), None)
    else:
        target = next((m for n, m in model.named_modules() if n.endswith("ebc")), None)
    if target is not None:
        target.register_forward_hook(lambda mod, args, out: ctl.observe(args[0], out) if mod.training else None)
    return target

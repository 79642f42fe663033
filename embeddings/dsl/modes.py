"""The three DSL modes behind one constructor, and where each one observes the batch.

| mode | unit | between updates | per-step cost | training memory |
|---|---|---|---|---|
| `exact` | weight | budget held at every step (masked gradient, re-masked rows) | 1.8-4.7x a plain FBGEMM step on CPU | full table + masks |
| `lazy` | weight | every looked-up row's inactive weights train freely; zeroed at every update and in a final exact phase | nothing (the plain step); the update passes over the rows whose row-wise optimizer state moved, growing the inactive weights that trained furthest | full table + masks |
| `row` | row | physical table = the budget's rows; inactive ids read a zero sentinel row | an int32 remap + sampled evidence | budget rows + one int32 per id |

Measured (benchmarks/kernels.py --threads 1 --clock cpu, ΔT = 100, exchange 0.1, seed 0, load 8-12
on 2 cores, 2026-12-07), amortised ratio to a plain FBGEMM step at 300k and 1M x 64: row 0.64-0.71x
with 20-id bags, 1.08-1.19x with one-id bags; lazy 1.6-2.0x with 20-id bags, 1.6-2.5x with one-id
bags (its update projects the looked-up rows and exchanges 10% of the budget: about one interval of
one-id steps on CPU).

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

"""The DSL exchange schedule: which share of the active weights is pruned and regrown at an update.

Cosine annealing from `cfg.initial_exchange` at step 0 down to 0 at `cfg.end_fraction * total_steps`,
and 0 from there on, so the sparse structure settles before training ends (as in RigL / DSL).

Example:
    >>> from embeddings.config import DSLConfig
    >>> cfg = DSLConfig(initial_exchange=0.4, end_fraction=0.5)
    >>> exchange_fraction(0, 100, cfg), round(exchange_fraction(25, 100, cfg), 6), exchange_fraction(50, 100, cfg)
    (0.4, 0.2, 0.0)
"""

from __future__ import annotations

import math

from embeddings.config import DSLConfig


def exchange_fraction(step: int, total_steps: int, cfg: DSLConfig) -> float:
    """Share of active weights exchanged by a prune/grow update at `step` (0 at and after the end).

    Example:
        >>> exchange_fraction(90, 100, DSLConfig(end_fraction=0.8))
        0.0
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    end = cfg.end_fraction * total_steps
    if step >= end or step < 0:
        return 0.0
    return cfg.initial_exchange * 0.5 * (1.0 + math.cos(math.pi * step / end))

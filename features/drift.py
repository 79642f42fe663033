"""Distribution shift between two periods from bucket counts: population stability index and Jensen-Shannon.

Pure functions on count vectors (the Spark job only produces the counts per bucket).

Example:
    >>> round(psi([50, 50], [50, 50]), 6)
    0.0
    >>> round(js_divergence([1, 0], [0, 1]), 6)
    1.0
"""

from __future__ import annotations

import math
from typing import Sequence

EPS = 1e-4  # share given to a bucket that is empty in one period, so the log stays finite


def shares(counts: Sequence[float], eps: float = EPS) -> list[float]:
    """Counts to shares that sum to 1, with empty buckets raised to `eps` (then renormalised)."""
    total = float(sum(counts))
    if total <= 0:
        return [1.0 / len(counts)] * len(counts) if counts else []
    raw = [max(c / total, eps) for c in counts]
    s = sum(raw)
    return [r / s for r in raw]


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = EPS) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over buckets; > 0.2 is usually called a shift.

    Example:
        >>> round(psi([90, 10], [10, 90]), 3)
        3.516
    """
    if len(expected) != len(actual):
        raise ValueError("expected and actual need the same buckets")
    e, a = shares(expected, eps), shares(actual, eps)
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a)))


def js_divergence(p_counts: Sequence[float], q_counts: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint supports).

    Example:
        >>> round(js_divergence([1, 1], [1, 1]), 6)
        0.0
    """
    if len(p_counts) != len(q_counts):
        raise ValueError("p and q need the same buckets")
    sp, sq = float(sum(p_counts)), float(sum(q_counts))
    if sp <= 0 or sq <= 0:
        return 0.0
    p = [c / sp for c in p_counts]
    q = [c / sq for c in q_counts]
    m = [(a + b) / 2 for a, b in zip(p, q)]

    def kl(x: list[float], y: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, y) if a > 0)

    return float(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)))

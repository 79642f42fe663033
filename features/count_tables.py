"""Spark aggregations that turn (group, value, label) rows into per-group `CountStats`.

One `groupBy(group, value)` counts each value's rows per label class (and per random label copy);
a second `groupBy(group, missing, n, n_1..n_{K-1})` collapses values with identical counts. Only
that second table (a few thousand rows per feature even at 10^6 values) reaches the driver, where
mi.py does the arithmetic. Every sum that feeds `mi` and `mi-permutation` is an integer count, so
the results are exact and the same on every run; the `mi-shifted` background sums are doubles.
`v` may be any type: the rank stage passes each value's 64-bit hash (a fixed-width group key).

Example::

    stats = group_count_stats(long_df, classes=2, copies=0, class_counts=np.array([75, 25]))
    stats[0].stats.mi()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.mi import CountStats, xlogx


@dataclass
class GroupCounts:
    """The count statistics of one feature (or pair) and what else the same pass learnt about it."""

    stats: CountStats
    cardinality: int      # distinct non-missing values
    missing_rows: int


def _xlogx_col(c: Any) -> Any:
    from pyspark.sql import functions as F

    return F.when(c > 0, c * F.log(c)).otherwise(F.lit(0.0))


def group_count_stats(long_df: Any, classes: int, copies: int,
                      class_counts: np.ndarray | None) -> dict[int, GroupCounts]:
    """`long_df` has columns g (int group id), v (value; null = missing), _y (class index 0..K-1) and
    _b0.._b{copies-1} (class index of each random label copy). Returns group id -> counts.

    `class_counts` None (e.g. a row sample whose size is not known beforehand): every group counts
    the same rows, so the class totals are read off the count tables themselves (checked equal).
    """
    from pyspark.sql import functions as F

    K, P = classes, copies
    ycols = [f"y{k}" for k in range(1, K)]
    bcols = {p: [f"b{p}_{k}" for k in range(1, K)] for p in range(P)}
    per_value = long_df.groupBy("g", "v").agg(
        F.count(F.lit(1)).alias("n"),
        *[F.sum(F.when(F.col("_y") == k, 1).otherwise(0)).alias(f"y{k}") for k in range(1, K)],
        *[F.sum(F.when(F.col(f"_b{p}") == k, 1).otherwise(0)).alias(f"b{p}_{k}") for p in range(P) for k in range(1, K)],
    )
    bg_aggs = []
    for p in range(P):
        rest = F.col("n") - sum((F.col(c) for c in bcols[p]), F.lit(0))
        jx = _xlogx_col(rest)
        for c in bcols[p]:
            jx = jx + _xlogx_col(F.col(c))
        bg_aggs.append(F.sum(jx).alias(f"bjx{p}"))
        bg_aggs += [F.sum(F.col(c)).alias(f"s{c}") for c in bcols[p]]
    shape = per_value.groupBy("g", F.col("v").isNull().alias("miss"), "n", *ycols).agg(
        F.count(F.lit(1)).alias("m"), *bg_aggs)
    # sorted so that the float sums below run in the same order on every run
    pdf = shape.toPandas().sort_values(["g", "miss", "n", *ycols], kind="stable")
    out: dict[int, GroupCounts] = {}
    for g, part in pdf.groupby("g", sort=True):
        n = part["n"].to_numpy(np.int64)
        m = part["m"].to_numpy(np.int64)
        y = part[ycols].to_numpy(np.int64) if ycols else np.zeros((len(part), 0), np.int64)
        cells = np.column_stack([n - y.sum(axis=1), y])
        totals = (cells * m[:, None]).sum(axis=0)
        if class_counts is None:
            class_counts = totals
        elif not np.array_equal(totals, class_counts):
            raise RuntimeError(f"count tables of group {g} hold class totals {totals.tolist()}, "
                               f"expected {np.asarray(class_counts).tolist()}")
        N = int(np.asarray(class_counts).sum())
        joint = float((xlogx(cells).sum(axis=1) * m).sum())
        bg_counts = np.zeros((P, K), dtype=np.int64)
        bg_joint = np.zeros(P)
        for p in range(P):
            s = np.array([int(part[f"s{c}"].sum()) for c in bcols[p]], dtype=np.int64)
            bg_counts[p] = np.concatenate([[N - s.sum()], s])
            bg_joint[p] = float(part[f"bjx{p}"].sum())
        miss = part["miss"].to_numpy(bool)
        stats = CountStats(class_counts=np.asarray(class_counts, dtype=np.int64), value_counts=n, multiplicity=m,
                           joint_xlogx=joint, background_class_counts=bg_counts, background_joint_xlogx=bg_joint)
        out[int(g)] = GroupCounts(stats=stats, cardinality=int(m[~miss].sum()), missing_rows=int((n * m)[miss].sum()))
    return out

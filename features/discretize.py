"""Quantile bins for dense columns: split points from Spark's approxQuantile, bins as a SQL expression.

A dense value x falls in bin i when splits[i-1] <= x < splits[i] (bin 0 below the first split,
the last bin at or above the last split); missing and NaN stay missing. The same splits give the
same bins in every pass, and a numpy reference reproduces them with
`np.searchsorted(splits, x, side="right")`.

Example:
    >>> splits = quantile_splits(spark, df, ["I1"], bins=8)        # doctest: +SKIP
    >>> df.selectExpr(bin_sql("`I1`", splits["I1"]))               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quantile_splits(spark: Any, df: Any, columns: list[str], bins: int, relative_error: float = 0.001) -> dict[str, list[float]]:
    """Distinct inner split points (at most `bins - 1`) per dense column, from one approxQuantile pass.

    Example:
        >>> quantile_splits(spark, df, ["I1"], bins=4)             # doctest: +SKIP
        {'I1': [1.0, 3.0, 9.0]}
    """
    if not columns or bins < 2:
        return {c: [] for c in columns}
    from pyspark.sql import functions as F

    probs = [i / bins for i in range(1, bins)]
    # NaN would sort above every number in the sketch; treat it as missing like the binning does
    clean = df.select(*[F.when(F.isnan(F.col(c)), None).otherwise(F.col(c)).alias(c) for c in columns])
    qs = clean.approxQuantile(columns, probs, relative_error)
    out = {}
    for c, q in zip(columns, qs):
        vals = sorted({float(v) for v in q if v is not None and np.isfinite(v)})
        out[c] = vals
    return out


def bin_sql(col_sql: str, splits: list[float]) -> str:
    """Spark SQL expression: the bin index of `col_sql` as a string ('b0', 'b1', ...), null when missing or NaN.

    One SQL string (rather than a chain of column calls) keeps the plan small and cheap to build.

    Example:
        >>> bin_sql("`I1`", [1.0, 3.0])
        "CASE WHEN `I1` IS NULL OR isnan(`I1`) THEN NULL ELSE concat('b', CAST(0 + CAST(`I1` >= 1.0D AS INT) + CAST(`I1` >= 3.0D AS INT) AS STRING)) END"
    """
    idx = " + ".join(["0"] + [f"CAST({col_sql} >= {float(s)!r}D AS INT)" for s in splits])
    return f"CASE WHEN {col_sql} IS NULL OR isnan({col_sql}) THEN NULL ELSE concat('b', CAST({idx} AS STRING)) END"


def bin_values(x: np.ndarray, splits: list[float]) -> np.ndarray:
    """The same bins in numpy (for references and small in-memory tables); NaN -> None.

    Example:
        >>> bin_values(np.array([0.5, 1.0, 7.0, np.nan]), [1.0, 3.0]).tolist()
        ['b0', 'b1', 'b2', None]
    """
    x = np.asarray(x, dtype=np.float64)
    idx = np.searchsorted(np.asarray(splits, dtype=np.float64), x, side="right")
    return np.array([None if np.isnan(v) else f"b{i}" for v, i in zip(x, idx)], dtype=object)

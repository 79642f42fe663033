"""Per-column numeric transforms of dense CTR columns, chosen on the train split and applied anywhere.

A column whose train values are all >= 0 (counts, amounts) gets `log1p`: z = log1p(max(x, 0));
a column with negative train values gets `signed_log`: z = sign(x) * log1p(|x|). z is then
standardized with the train mean and (population) sd of z (sd 0 -> 1), and a missing value
(null or NaN) becomes 0, the train mean. Optionally the raw value also gets a bucket id from
quantile splits of the train values: 0 missing, 1 + the number of splits <= x otherwise (an int64
column `<col>__bucket` embedded like a categorical feature, `len(splits) + 2` ids).

`DenseTransform` is what `schema.json` records (`dense_transforms[col]`); `apply_dense` and
`bucket_ids` are the pure versions a scorer uses, `dense_sql` / `bucket_sql` the Spark ones of
the vocab stage, and the two agree value for value.

Example:
    >>> t = DenseTransform(column="I1", kind="log1p", mean=1.0, sd=2.0, bucket_splits=[1.0, 5.0])
    >>> apply_dense(np.array([np.e - 1, np.nan, -3.0]), t).tolist()
    [0.0, 0.0, -0.5]
    >>> bucket_ids(np.array([0.5, 1.0, 9.0, np.nan]), t.bucket_splits).tolist()
    [1, 2, 3, 0]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

KINDS = ("log1p", "signed_log")
BUCKET_SUFFIX = "__bucket"


@dataclass(frozen=True)
class DenseTransform:
    """One dense column's transform: `kind` (log1p | signed_log), the train `mean` / `sd` of the
    transformed values, and the bucket splits (empty: no bucket column)."""

    column: str
    kind: str
    mean: float
    sd: float
    bucket_splits: list[float] = field(default_factory=list)
    bucket_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DenseTransform":
        """Read a `schema.json` record back; an unknown kind or a non-positive sd is a ValueError."""
        kind = str(d["kind"])
        if kind not in KINDS:
            raise ValueError(f"dense transform of '{d.get('column')}': kind '{kind}' is not one of {', '.join(KINDS)}")
        sd = float(d["sd"])
        if not sd > 0:
            raise ValueError(f"dense transform of '{d.get('column')}': sd {sd} must be > 0")
        return cls(column=str(d["column"]), kind=kind, mean=float(d["mean"]), sd=sd,
                   bucket_splits=[float(s) for s in d.get("bucket_splits") or []],
                   bucket_column=d.get("bucket_column"))


def bucket_column(column: str) -> str:
    """Name of a dense column's bucket id column: `I1` -> `I1__bucket`."""
    return f"{column}{BUCKET_SUFFIX}"


def _raw(x: Any) -> np.ndarray:
    """float64 numpy of a numpy array, list or pyarrow (chunked) array; nulls -> NaN."""
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x
        return pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return np.asarray(x, dtype=np.float64)


def transformed(x: Any, kind: str) -> np.ndarray:
    """z before standardizing (float64; NaN stays NaN).

    Example:
        >>> transformed(np.array([-(np.e - 1), 0.0]), "signed_log").tolist()
        [-1.0, 0.0]
    """
    x = _raw(x)
    if kind == "log1p":
        return np.log1p(np.maximum(x, 0.0))
    if kind == "signed_log":
        return np.sign(x) * np.log1p(np.abs(x))
    raise ValueError(f"unknown dense transform kind '{kind}'; use one of {', '.join(KINDS)}")


def apply_dense(x: Any, t: DenseTransform) -> np.ndarray:
    """The encoded float32 values of raw values `x` (numpy, list or pyarrow; null/NaN = missing -> 0)."""
    z = (transformed(x, t.kind) - t.mean) / t.sd
    return np.where(np.isnan(z), 0.0, z).astype(np.float32)


def bucket_ids(x: Any, splits: list[float]) -> np.ndarray:
    """int64 bucket ids of raw values: 0 missing, 1 + the number of splits <= x otherwise."""
    x = _raw(x)
    idx = np.searchsorted(np.asarray(splits, dtype=np.float64), x, side="right") + 1
    return np.where(np.isnan(x), 0, idx).astype(np.int64)


def choose_kind(train_min: float | None) -> str:
    """`signed_log` when the train split holds a negative value, else `log1p`."""
    return "signed_log" if train_min is not None and train_min < 0 else "log1p"


def _lit(v: float) -> str:
    return f"CAST({float(v)!r} AS DOUBLE)"


def transformed_sql(col_sql: str, kind: str) -> str:
    """Spark SQL of `transformed` (null stays null; the caller maps NaN to null)."""
    if kind == "log1p":
        return f"log1p(CASE WHEN {col_sql} < 0 THEN CAST(0.0 AS DOUBLE) ELSE {col_sql} END)"  # greatest() skips nulls
    if kind == "signed_log":
        return f"(signum({col_sql}) * log1p(abs({col_sql})))"
    raise ValueError(f"unknown dense transform kind '{kind}'; use one of {', '.join(KINDS)}")


def _clean_sql(col_sql: str) -> str:
    return f"(CASE WHEN isnan(CAST({col_sql} AS DOUBLE)) THEN NULL ELSE CAST({col_sql} AS DOUBLE) END)"


def dense_sql(col_sql: str, t: DenseTransform) -> str:
    """Spark SQL of `apply_dense`: a float.

    Example:
        >>> dense_sql("`I1`", DenseTransform("I1", "log1p", 0.5, 2.0))[:41]
        'CAST(coalesce((log1p(CASE WHEN (CASE WHEN'
    """
    z = transformed_sql(_clean_sql(col_sql), t.kind)
    return f"CAST(coalesce(({z} - {_lit(t.mean)}) / {_lit(t.sd)}, CAST(0.0 AS DOUBLE)) AS FLOAT)"


def bucket_sql(col_sql: str, splits: list[float]) -> str:
    """Spark SQL of `bucket_ids`: a bigint (one comparison per split, as `bin_sql`)."""
    x = _clean_sql(col_sql)
    idx = " + ".join(["1"] + [f"CAST({x} >= {_lit(s)} AS BIGINT)" for s in splits])
    return f"CAST(CASE WHEN {x} IS NULL THEN 0 ELSE {idx} END AS BIGINT)"


def fit_transforms(spark: Any, train: Any, columns: list[str], buckets: int = 0) -> list[DenseTransform]:
    """Choose each column's transform on the train rows: one grouped pass over a long form (column,
    value) for the min and the mean / sd of both candidate transforms (so the plan does not grow with
    the column count), plus one quantile pass when `buckets` >= 2.

    Example::

        fit_transforms(spark, train_df, ["I1"], buckets=8)[0].kind
        # -> 'log1p'
    """
    if not columns:
        return []
    from pyspark.sql import functions as F

    from features.discretize import quantile_splits

    pairs = ", ".join(f"struct({k} AS k, {_clean_sql(f'`{c}`')} AS x)" for k, c in enumerate(columns))
    long = train.selectExpr(f"inline(array({pairs}))").where("x IS NOT NULL")
    aggs = ["min(x) AS lo"] + [f"{f}({transformed_sql('x', kind)}) AS {f[:3]}_{kind}"
                               for kind in KINDS for f in ("avg", "stddev_pop")]
    stats = {int(r["k"]): r for r in long.groupBy("k").agg(*[F.expr(a) for a in aggs]).collect()}
    splits = quantile_splits(spark, train, columns, bins=buckets) if buckets >= 2 else {c: [] for c in columns}
    out = []
    for k, c in enumerate(columns):
        row = stats.get(k)
        kind = choose_kind(None if row is None else float(row["lo"]))
        mean = None if row is None else row[f"avg_{kind}"]
        sd = None if row is None else row[f"std_{kind}"]
        mean = 0.0 if mean is None else float(mean)
        sd = 1.0 if sd is None or not float(sd) > 1e-12 else float(sd)
        out.append(DenseTransform(column=c, kind=kind, mean=mean, sd=sd,
                                  bucket_splits=list(splits[c]) if buckets >= 2 else [],
                                  bucket_column=bucket_column(c) if buckets >= 2 else None))
    return out

"""Time-based train / validation / test split of a Spark DataFrame, by timestamp quantiles.

The latest `test_share` of rows (by timestamp) is the test period, the `validation_share` before it
the validation period, the rest the train period. Cuts are timestamps: a row belongs to the test
period when `ts >= test_start`, so rows with the same timestamp never straddle a cut. Data without a
timestamp gets a deterministic hash split (and is not time-ordered).

Example:
    >>> cuts = time_cuts(df, "ts", validation_share=0.1, test_share=0.1)   # doctest: +SKIP
    >>> df = df.withColumn("split", split_column(cuts, "ts"))            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SPLITS = ("train", "validation", "test")
_HASH_BUCKETS = 1_000_000


@dataclass(frozen=True)
class SplitCuts:
    """Where the periods start. `method` is "time" (cuts are timestamps) or "hash" (cuts are shares)."""

    method: str
    validation_start: float | None
    test_start: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def time_cuts(df, ts: str | None, validation_share: float, test_share: float, accuracy: int = 100_000) -> SplitCuts:
    """Cut timestamps for the given shares (one aggregate pass; exact for up to `accuracy` rows)."""
    from pyspark.sql import functions as F

    if validation_share + test_share >= 1.0:
        from features.errors import ConfigError

        raise ConfigError(f"validation_share {validation_share} + test_share {test_share} leave no train period; "
                          "make their sum smaller than 1.")
    if ts is None:
        return SplitCuts("hash", 1.0 - test_share - validation_share, 1.0 - test_share)
    qs = [1.0 - test_share - validation_share, 1.0 - test_share]
    row = df.agg(F.percentile_approx(F.col(ts), qs, accuracy).alias("q")).first()
    q = row["q"] if row is not None and row["q"] is not None else [None, None]
    val = None if validation_share == 0 or q[0] is None else float(q[0])
    test = None if test_share == 0 or q[1] is None else float(q[1])
    if val is not None and test is not None and val >= test:
        val = test  # too few distinct timestamps: the validation period is empty
    return SplitCuts("time", val, test)


def split_column(cuts: SplitCuts, ts: str | None, columns: list[str] | None = None):
    """A string column naming each row's period ("train", "validation", "test")."""
    from pyspark.sql import functions as F

    if cuts.method == "hash":
        key = F.pmod(F.xxhash64(*[F.col(c) for c in (columns or [])]), F.lit(_HASH_BUCKETS)) / _HASH_BUCKETS
    else:
        key = F.col(ts)
    col = F.lit("train")
    if cuts.validation_start is not None:
        col = F.when(key >= F.lit(cuts.validation_start), F.lit("validation")).otherwise(col)
    if cuts.test_start is not None:
        col = F.when(key >= F.lit(cuts.test_start), F.lit("test")).otherwise(col)
    return col


def write_by_split(df, split_col: str, out, order: list) -> dict[str, int]:
    """Write `df` as `out/<split>/` Parquet folders, rows sorted by `order` (names or Columns) inside each.

    Returns rows per split.

    One write pass (`partitionBy`), then the folders are renamed; an empty period still gets a folder
    with the schema.
    """
    import os
    import shutil
    from pathlib import Path

    spark = df.sparkSession
    out = Path(out)
    staging = out / "_by_split"
    cols = [c for c in df.columns if c != split_col]
    # sorting by the split first satisfies the writer's partitionBy ordering, so `order` survives
    df.orderBy(split_col, *order).write.partitionBy(split_col).mode("overwrite").parquet(str(staging))
    rows = {}
    for s in SPLITS:
        src, dst = staging / f"{split_col}={s}", out / s
        if src.exists():
            os.replace(src, dst)
            rows[s] = spark.read.parquet(str(dst)).count()
        else:
            df.select(*cols).limit(0).write.mode("overwrite").parquet(str(dst))
            rows[s] = 0
    shutil.rmtree(staging)
    return rows

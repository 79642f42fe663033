"""Train / validation / test split of a Spark DataFrame: by time (timestamp quantiles) or seeded random.

`time`: the latest `test_share` of rows (by timestamp) is the test period, the `validation_share`
before it the validation period, the rest the train period. Cuts are timestamps: a row belongs to
the test period when `ts >= test_start`, so rows with the same timestamp never straddle a cut.

`random`: each row draws a number u in [0, 1) from a hash of the seed and its row key; u >=
`test_start` is test, u >= `validation_start` validation. The row key is the row's position in
the ingest output (so every row, duplicates included, is drawn on its own), or the values of the
user's `split_key` columns (rows that share them stay together). The label is never part of it.

Example::

    cuts = time_cuts(df, "ts", validation_share=0.1, test_share=0.1)
    df = df.withColumn("split", split_column(cuts, "ts"))
    cuts = random_cuts(0.1, 0.1, seed=7)
    df = df.withColumn("split", split_column(cuts, key=row_number_column(df)))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SPLITS = ("train", "validation", "test")
_HASH_BUCKETS = 1_000_000


@dataclass(frozen=True)
class SplitCuts:
    """Where the periods start. `method` is "time" (cuts are timestamps) or "random" (cuts are shares of [0, 1)).

    A random split also records its `seed` and `key` (the `split_key` columns; empty: each row on its own).
    """

    method: str
    validation_start: float | None
    test_start: float | None
    seed: int | None = None
    key: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["key"] = list(self.key) if self.key else "row"
        if self.method != "random":
            d.pop("seed")
            d.pop("key")
        return d


def _check_shares(validation_share: float, test_share: float) -> None:
    if validation_share + test_share >= 1.0:
        from features.errors import ConfigError

        raise ConfigError(f"validation_share {validation_share} + test_share {test_share} leave no train period; "
                          "make their sum smaller than 1.")


def random_cuts(validation_share: float, test_share: float, seed: int = 0, key: list[str] | tuple[str, ...] = ()) -> SplitCuts:
    """Cuts of a seeded random split (no data pass needed).

    Example:
        >>> random_cuts(0.1, 0.2, seed=3).to_dict()
        {'method': 'random', 'validation_start': 0.7, 'test_start': 0.8, 'seed': 3, 'key': 'row'}
    """
    _check_shares(validation_share, test_share)
    val = None if validation_share == 0 else round(1.0 - test_share - validation_share, 12)
    test = None if test_share == 0 else round(1.0 - test_share, 12)
    return SplitCuts("random", val, test, int(seed), tuple(key))


def time_cuts(df, ts: str | None, validation_share: float, test_share: float, accuracy: int = 100_000) -> SplitCuts:
    """Cut timestamps for the given shares (one aggregate pass; exact for up to `accuracy` rows).

    Without a timestamp (`ts` None) the cuts of a random split with seed 0.
    """
    from pyspark.sql import functions as F

    _check_shares(validation_share, test_share)
    if ts is None:
        return random_cuts(validation_share, test_share)
    qs = [1.0 - test_share - validation_share, 1.0 - test_share]
    row = df.agg(F.percentile_approx(F.col(ts), qs, accuracy).alias("q")).first()
    q = row["q"] if row is not None and row["q"] is not None else [None, None]
    val = None if validation_share == 0 or q[0] is None else float(q[0])
    test = None if test_share == 0 or q[1] is None else float(q[1])
    if val is not None and test is not None and val >= test:
        val = test  # too few distinct timestamps: the validation period is empty
    return SplitCuts("time", val, test)


def row_number_column(df):
    """Each row's 0-based position in a Parquet folder: files in name order (Spark's `part-<n>` order),
    rows in file order. `df` must come straight from `spark.read.parquet` (it reads `_metadata`);
    one small aggregate (rows per file) runs on the driver.

    The ingest stage writes its rows in (timestamp,) file, line order, so this is the row's place in
    the input, the same on every read and independent of how Spark splits the files.
    """
    from pyspark.sql import functions as F

    counts = sorted((r["f"], int(r["n"])) for r in df.select(F.col("_metadata.file_name").alias("f"))
                    .groupBy("f").agg(F.count(F.lit(1)).alias("n")).collect())
    pairs, before = [], 0
    for name, n in counts:
        pairs += [F.lit(name), F.lit(before)]
        before += n
    if not pairs:
        return F.col("_metadata.row_index")
    return (F.element_at(F.create_map(*pairs), F.col("_metadata.file_name")) + F.col("_metadata.row_index")).cast("long")


def unit_hash(seed: int, *cols):
    """A number in [0, 1) drawn from a hash of `seed` and the given Columns (same inputs, same number)."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(int(seed)), *cols), F.lit(_HASH_BUCKETS)) / _HASH_BUCKETS


def order_column(seed: int, row):
    """A seeded random sort key of each row (`row`: its row-number Column): files written in this
    order are shuffled, reproducibly, and never grouped by label."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(int(seed)), F.lit("order"), row)


def split_column(cuts: SplitCuts, ts: str | None = None, key=None):
    """A string column naming each row's period ("train", "validation", "test").

    `time` cuts compare the `ts` column; `random` cuts hash the seed with the `split_key` columns
    (`cuts.key`) or, when there are none, with `key` (a row-number Column, see `row_number_column`).
    """
    from pyspark.sql import functions as F

    if cuts.method in ("random", "hash"):
        parts = [F.col(c) for c in cuts.key] if cuts.key else ([key] if key is not None else [])
        if not parts:
            raise ValueError("a random split needs a row key: pass key=row_number_column(df) or split_key columns")
        u = unit_hash(cuts.seed or 0, *parts)
    else:
        u = F.col(ts)
    col = F.lit("train")
    if cuts.validation_start is not None:
        col = F.when(u >= F.lit(cuts.validation_start), F.lit("validation")).otherwise(col)
    if cuts.test_start is not None:
        col = F.when(u >= F.lit(cuts.test_start), F.lit("test")).otherwise(col)
    return col


def write_by_split(df, split_col: str, out, order: list, drop: list[str] | tuple[str, ...] = (),
                   ranged: bool = False) -> dict[str, int]:
    """Write `df` as `out/<split>/` Parquet folders, rows sorted by `order` (names or Columns) inside each.

    Returns rows per split. Columns in `drop` (sort helpers) are not written.

    One write pass (`partitionBy`), then the folders are renamed; an empty period still gets a folder
    with the schema. `ranged`: `df` is already range-partitioned by (`split_col`, *`order`) (e.g. by
    `repartitionByRange` before costly columns were added), so each partition is only sorted; else a
    global sort, whose range sampling computes every column of `df` once more.
    """
    import os
    import shutil
    from pathlib import Path

    spark = df.sparkSession
    out = Path(out)
    staging = out / "_by_split"
    cols = [c for c in df.columns if c != split_col and c not in drop]
    # sorting by the split first satisfies the writer's partitionBy ordering, so `order` survives
    ordered = df.sortWithinPartitions(split_col, *order) if ranged else df.orderBy(split_col, *order)
    ordered.drop(*drop).write.partitionBy(split_col).mode("overwrite").parquet(str(staging))
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

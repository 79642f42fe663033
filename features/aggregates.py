"""Per-user and per-item counts and click-through rates over time windows, as of each event.

For every event at time t and each window of W days, the aggregates of its user (and item) count
only events strictly BEFORE t, in [t - W*86400, t - 1] (epoch seconds), so an event's own label
never leaks into its features. Column names: `<entity>_events_<W>d`, and when the data has a
label `<entity>_clicks_<W>d` and `<entity>_ctr_<W>d` (null when there is no history). Events
without a user (or item) key get nulls for that entity's columns (counted in the summary).

The stage writes `data/`: the ingest rows, an `event_id` (long, 0.. in (timestamp, row hash)
order: the same data gives the same ids; numbered per time bucket, never in one partition) and the aggregate columns (double), so the rank stage
can read `aggregates/` in place of `ingest/` (see `with_aggregate_roles`).

Example::

    summary = aggregates({"ingest": Path("runs/r/ingest")}, Path("runs/r/aggregates"),
                         dataset, windows_days=[1, 7], spark=spark)
    summary["columns"][:3]
    # -> ['user_events_1d', 'user_clicks_1d', 'user_ctr_1d']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from features.config import DatasetConfig
from features.errors import DataError

EVENT_ID = "event_id"
DAY = 86_400


def entity_keys(dataset: DatasetConfig) -> dict[str, str]:
    """Entity name -> key column, from the dataset's roles (user, item, session when declared)."""
    r = dataset.roles
    keys = {"user": r.user_id, "item": r.item_id, "session": r.session_id}
    return {k: v for k, v in keys.items() if v is not None}


def aggregate_columns(dataset: DatasetConfig, windows_days: Sequence[int]) -> list[str]:
    """Names of the aggregate columns the stage writes, in order.

    Example:
        >>> from features.config import ColumnRoles
        >>> ds = DatasetConfig(path="train.tsv", kind="ctr", roles=ColumnRoles(
        ...     label="label", timestamp="ts", dense=["I1"], categorical=["C10", "C11"], user_id="C10", item_id="C11"))
        >>> aggregate_columns(ds, [1])
        ['user_events_1d', 'user_clicks_1d', 'user_ctr_1d', 'item_events_1d', 'item_clicks_1d', 'item_ctr_1d']
    """
    stats = ["events", "clicks", "ctr"] if dataset.roles.label else ["events"]
    return [f"{ent}_{s}_{w}d" for ent in ("user", "item") if ent in entity_keys(dataset)
            for w in windows_days for s in stats]


def with_aggregate_roles(dataset: DatasetConfig, windows_days: Sequence[int]) -> DatasetConfig:
    """A copy of `dataset` whose dense columns include the aggregates (for ranking `aggregates/`).

    Example (the rank stage then reads `aggregates/` as its ingest folder):
        >>> from features.config import ColumnRoles
        >>> ds = DatasetConfig(path="train.tsv", kind="ctr", roles=ColumnRoles(label="label", dense=["I1"], user_id="C10"))
        >>> with_aggregate_roles(ds, [1]).roles.dense
        ['I1', 'user_events_1d', 'user_clicks_1d', 'user_ctr_1d']
    """
    extra = [c for c in aggregate_columns(dataset, windows_days) if c not in dataset.roles.dense]
    roles = dataset.roles.model_copy(update={"dense": [*dataset.roles.dense, *extra]})
    return dataset.model_copy(update={"roles": roles})


def _check_columns(df, path: Path, dataset: DatasetConfig) -> None:
    ts = dataset.roles.timestamp
    if ts is None:
        raise DataError(f"dataset '{dataset.name}': roles.timestamp is not set; aggregates and the feature store "
                        "need event times, so declare the timestamp column under dataset.roles.timestamp.")
    for role, col in [("timestamp", ts), *[(f"{k}_id", v) for k, v in entity_keys(dataset).items()]]:
        if col not in df.columns:
            raise DataError(f"{path}: column '{col}' (dataset.roles.{role}) is not in the data; "
                            f"columns are {', '.join(df.columns[:12])}...; fix the role or re-run ingest.")


def _window_columns(key: str, prefix: str, ts: str, label: str | None, windows_days: Sequence[int]):
    """Counts / clicks / CTR of `key`'s events in [t - W days, t - 1], as differences of running totals.

    A frame `rangeBetween(-W, -1)` makes Spark's sliding frame re-aggregate the whole frame whenever its lower
    bound moves (it cannot remove rows), so a key with many events in a window costs rows x frame: quadratic
    on a hot user or item (0.5M Zipf rows: over 15 min in one task). Frames that start at the partition's
    first row grow incrementally, so `total(ts <= t - 1) - total(ts <= t - W days - 1)` is the same
    exact count (integers) at linear cost.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def upto(end: int):   # rows of the key with ts <= t + end
        return Window.partitionBy(key).orderBy(F.col(ts)).rangeBetween(Window.unboundedPreceding, end)

    def totals(end: int):
        n = F.count(F.lit(1)).over(upto(end))
        c = F.coalesce(F.sum(F.col(label).cast("long")).over(upto(end)), F.lit(0)) if label else None
        return n, c

    has_key = F.col(key).isNotNull()
    n_before, c_before = totals(-1)
    cols = []
    for w in windows_days:
        n_old, c_old = totals(-w * DAY - 1)
        events = (n_before - n_old).cast("double")
        cols.append(F.when(has_key, events).alias(f"{prefix}_events_{w}d"))
        if label:
            clicks = (c_before - c_old).cast("double")
            cols.append(F.when(has_key, clicks).alias(f"{prefix}_clicks_{w}d"))
            cols.append(F.when(has_key & (events > 0), clicks / events).alias(f"{prefix}_ctr_{w}d"))
    return cols


def add_event_ids(df, ts: str, columns: Sequence[str] | None = None, rows_per_bucket: int = 250_000):
    """Number rows 0.. by (timestamp, hash of `columns`, default all): deterministic for the same data.

    No single partition: the rows are cut into time buckets (bounds from approximate quantiles of the
    timestamp; a timestamp's rows all share one bucket), each bucket's rows are counted (a small
    pass over the timestamp column alone), and a row's id is the rows of the earlier buckets plus
    its rank inside its own bucket, ordered by (timestamp, row hash). So the ids are those of one
    global `row_number()` over (timestamp, row hash), whatever the bounds, while every bucket is
    numbered on its own; each output partition is in id order.

    Example::

        add_event_ids(spark.createDataFrame([(5, "a"), (3, "b")], "ts long, x string"), "ts") \\
            .orderBy("event_id").select("x").collect()
        # -> [Row(x='b'), Row(x='a')]
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    grid = 256   # the most buckets; one pass reads the row count and the timestamp's quantile grid
    first = df.agg(F.count(F.lit(1)).alias("n"), F.min(ts).alias("lo"),
                   F.percentile_approx(F.col(ts), [k / grid for k in range(1, grid)], 10_000).alias("q")).first()
    if int(first["n"]) == 0:
        return df.withColumn(EVENT_ID, F.lit(None).cast("long"))
    buckets = max(1, min(grid, -(-int(first["n"]) // max(1, rows_per_bucket))))
    picked = [first["q"][round(k * grid / buckets) - 1] for k in range(1, buckets)]
    bounds = sorted({int(v) for v in picked if v is not None and int(v) > int(first["lo"])})
    bucket = sum((F.when(F.col(ts) >= F.lit(b), 1).otherwise(0) for b in bounds), F.lit(0)).alias("_bucket")
    sizes = {int(r["_bucket"]): int(r["count"]) for r in df.select(bucket).groupBy("_bucket").count().collect()}
    offsets, seen = {}, 0
    for b in sorted(sizes):
        offsets[b], seen = seen, seen + sizes[b]
    start = F.element_at(F.create_map(*[F.lit(v) for b in sorted(offsets) for v in (b, offsets[b])]), F.col("_bucket"))
    order = Window.partitionBy("_bucket").orderBy(F.col(ts), F.xxhash64(*[F.col(c) for c in (columns or df.columns)]))
    keyed = df.select("*", bucket).repartition(len(sizes), "_bucket")
    return keyed.withColumn(EVENT_ID, (start + F.row_number().over(order) - 1).cast("long")).drop("_bucket")


def aggregates(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, windows_days: Sequence[int], spark) -> dict:
    """Stage: read `inputs["ingest"]/data`, write `out/data` = rows + event_id + aggregate columns."""
    from pyspark.sql import functions as F

    path = Path(inputs["ingest"]) / "data"
    if not path.exists():
        raise DataError(f"{path}: the ingest output is missing; run `sparserec features ingest` first.")
    df = spark.read.parquet(str(path))
    _check_columns(df, path, dataset)
    ts = dataset.roles.timestamp
    label = dataset.roles.label if dataset.roles.label in df.columns else None
    keys = entity_keys(dataset)
    stats_keys = [e for e in ("user", "item") if e in keys]
    # one pass for every count: rows, null times (refused), rows without a user / item key
    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col(ts).isNull().cast("long")).alias("null_ts"),
                 *[F.sum(F.col(keys[e]).isNull().cast("long")).alias(f"null_{e}") for e in stats_keys]).first()
    if row["null_ts"]:
        raise DataError(f"{path}: timestamp column '{ts}' has {row['null_ts']} null value(s); every event needs a time "
                        "(fix the data or quarantine those rows at ingest).")
    base = df.columns
    for ent in stats_keys:
        df = df.select(*df.columns, *_window_columns(keys[ent], ent, ts, label, windows_days))
    names = [c for c in df.columns if c not in base]
    df = add_event_ids(df, ts, base)   # its counting passes read the timestamp alone (the windows are pruned)
    # window functions keep every row: rows_out == rows_in by construction
    df.select(*base, EVENT_ID, *names).write.mode("overwrite").parquet(str(out / "data"))
    rows_in = int(row["n"])
    summary = {"rows_in": rows_in, "rows_out": rows_in, "columns": names,
               "windows_days": list(windows_days), "label": label,
               "rows_without_key": {e: int(row[f"null_{e}"] or 0) for e in stats_keys}}
    (out / "aggregates.json").write_text(json.dumps({"columns": names, "keys": keys, "timestamp": ts,
                                                     "event_id": EVENT_ID, "label": label,
                                                     "windows_days": list(windows_days)}, indent=2) + "\n")
    return summary

"""Sessions stage: time-ordered item sequences per session, a time split that keeps cold items cold,
and the item-metadata table encoded with vocabularies learnt on the train period.

Events with equal timestamps keep the order of the raw files (`with_file_order`). Without an
item table, or with one that declares no attribute columns, the `items/` table lists the items
by id only (ID models train on it; M2TRec needs attributes). Without a session id, each user's events are cut into sessions wherever two consecutive events are
more than `gap_minutes` apart (Spark window functions). A session belongs to the period in which it
starts; its events at or after the end of that period are clipped (counted), so no item is seen in
an earlier period than its first real appearance. Sessions shorter than `min_length` are dropped
(counted), longer ones keep their last `max_length` events (counted).

Example (needs a SparkSession, so shown, not run; tests/features/test_sessions.py runs it)::

    s = build_sessions({"ingest": Path("runs/r/ingest")}, Path("out"), ds, SessionsConfig(gap_minutes=30), spark)
    s["sessions"]["train"] > 0      # True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from features.config import DatasetConfig, SessionsConfig
from features.errors import DataError
from features.split import SPLITS, split_column, time_cuts, write_by_split
from features.vocab import FIRST_ID, MISSING_ID, UNKNOWN_ID, assign_ids, value_counts

_RANK = {s: i for i, s in enumerate(SPLITS)}


def sessionize(events, user: str, ts: str, item: str, gap_seconds: float):
    """Add `session_id` = `<user>#<n>`: a new session starts when the gap to the previous event exceeds the limit.

    Example::

        sessionize(df, "user_id", "timestamp", "item_id", 1800).select("session_id").first()
        # -> Row(session_id='17#1')
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(user).orderBy(ts, item)
    prev = F.lag(ts).over(w)
    new = F.when(prev.isNull() | ((F.col(ts) - prev) > F.lit(gap_seconds)), 1).otherwise(0)
    run = Window.partitionBy(user).orderBy(ts, item).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return (events.withColumn("_new", new)
            .withColumn("_n", F.sum("_new").over(run))
            .withColumn("session_id", F.concat(F.col(user).cast("string"), F.lit("#"), F.col("_n").cast("string")))
            .drop("_new", "_n"))


def with_file_order(events):
    """Add `_f`, `_o`: where each event sits in the ingest output (part file name, position in it).

    The ingest stage writes its rows sorted by (timestamp, raw file, line), so ordering events by
    (time, `_f`, `_o`) keeps equal timestamps in the raw files' order (exact while each part file
    is read by one task, i.e. is smaller than `spark.sql.files.maxPartitionBytes`, 128 MB).
    """
    from pyspark.sql import functions as F

    return events.withColumn("_f", F.col("_metadata.file_path")).withColumn("_o", F.monotonically_increasing_id())


def _sequences(events, sid: str, user: str | None, ts: str, item: str):
    """One row per session: `ev` = events sorted by time, equal times in file order (`with_file_order`), plus raw counts."""
    from pyspark.sql import functions as F

    ev = F.when(F.col(item).isNotNull() & F.col(ts).isNotNull(),
                F.struct(F.col(ts).alias("t"), F.col("_f").alias("f"), F.col("_o").alias("o"),
                         F.col(item).cast("string").alias("i")))
    return events.groupBy(F.col(sid).cast("string").alias("session_id")).agg(
        (F.min(F.col(user).cast("string")) if user else F.lit(None).cast("string")).alias("user_id"),
        F.array_sort(F.collect_list(ev)).alias("ev"),
        F.count(F.lit(1)).alias("n_events"))


def _end_of(cuts):
    """Column: the time at which a session's period ends (null for the last period)."""
    from pyspark.sql import functions as F

    ends = {"train": cuts.validation_start if cuts.validation_start is not None else cuts.test_start,
            "validation": cuts.test_start, "test": None}
    col = F.lit(None).cast("double")
    for s, e in ends.items():
        if e is not None:
            col = F.when(F.col("_split") == s, F.lit(float(e))).otherwise(col)
    return col


def build_sessions(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: SessionsConfig, spark) -> dict:
    """Sessions stage: `train|validation|test/`, `items/`, `item_vocab.json`, `split.json` under `out`."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    out = Path(out)
    r = dataset.roles
    if dataset.kind not in ("sessions", "interactions"):
        raise DataError(f"dataset.kind is '{dataset.kind}'; the sessions stage needs a 'sessions' or 'interactions' dataset.")
    data_path = Path(inputs["ingest"]) / "data"
    if not data_path.exists():
        raise DataError(f"{inputs['ingest']}: no data/ folder; pass the output folder of the ingest stage (--input).")
    events = with_file_order(spark.read.parquet(str(data_path)))
    sid = r.session_id
    if sid is None:
        if r.user_id is None:
            raise DataError("a dataset without roles.session_id needs roles.user_id to cut sessions by inactivity gaps; add it.")
        events = sessionize(events, r.user_id, r.timestamp, r.item_id, cfg.gap_minutes * 60.0)
        sid = "session_id"
    seqs = _sequences(events, sid, r.user_id, r.timestamp, r.item_id)
    seqs = seqs.withColumn("n_items", F.size("ev")).persist(StorageLevel.MEMORY_AND_DISK)
    raw = seqs.agg(F.count(F.lit(1)).alias("sessions"), F.sum("n_events").alias("events"),
                   F.sum((F.col("n_items") == 0).cast("long")).alias("empty"),
                   F.sum(F.col("n_events") - F.col("n_items")).alias("no_item")).first()
    nonempty = seqs.where(F.col("n_items") > 0).withColumn("start", F.col("ev")[0]["t"])
    cuts = time_cuts(nonempty, "start", cfg.validation_share, cfg.test_share)
    staged = nonempty.withColumn("_split", split_column(cuts, "start")).withColumn("_end", _end_of(cuts))
    clipped = staged.withColumn("ev", F.filter("ev", lambda e: F.col("_end").isNull() | (e["t"] < F.col("_end"))))
    clipped = clipped.withColumn("n_clipped", F.col("n_items") - F.size("ev"))
    n_ev = F.size("ev")
    final = (clipped.withColumn("truncated", n_ev > cfg.max_length)
             .withColumn("ev", F.when(n_ev > cfg.max_length, F.slice("ev", -cfg.max_length, cfg.max_length)).otherwise(F.col("ev")))
             .withColumn("too_short", F.size("ev") < cfg.min_length))
    final = final.persist(StorageLevel.MEMORY_AND_DISK)
    by_split = final.groupBy("_split").agg(
        F.sum("n_clipped").alias("clipped"), F.sum(F.col("truncated").cast("long")).alias("truncated"),
        F.sum(F.col("too_short").cast("long")).alias("too_short"),
        F.sum(F.when(~F.col("too_short"), F.size("ev")).otherwise(0)).alias("events")).collect()
    stats = {k: sum(int(r[k] or 0) for r in by_split) for k in ("clipped", "truncated", "too_short")}
    events_per_split = {r["_split"]: int(r["events"] or 0) for r in by_split}
    kept = final.where(~F.col("too_short"))
    out_df = kept.select("session_id", "user_id", F.transform("ev", lambda e: e["i"]).alias("items"),
                         F.transform("ev", lambda e: e["t"]).alias("timestamps"), "_split")
    rows = write_by_split(out_df, "_split", out, [F.col("timestamps")[0], "session_id"])
    cold = _first_seen_counts(kept)
    items_summary = _build_items(spark, Path(inputs["ingest"]), dataset, kept, out)
    final.unpersist()
    seqs.unpersist()
    split = {
        "cuts": cuts.to_dict(), "by": "session start time",
        "sessions": rows, "events": {s: events_per_split.get(s, 0) for s in SPLITS},
        "cold_items": cold, "min_length": cfg.min_length, "max_length": cfg.max_length,
        "sessionized_by_gap_minutes": None if r.session_id else cfg.gap_minutes,
        "raw_sessions": int(raw["sessions"]), "raw_events": int(raw["events"] or 0),
        "empty_sessions": int(raw["empty"] or 0), "events_without_item": int(raw["no_item"] or 0),
        "clipped_events": stats["clipped"], "truncated_sessions": stats["truncated"],
        "too_short_sessions": stats["too_short"], **items_summary,
    }
    (out / "split.json").write_text(json.dumps(split, indent=2, sort_keys=True) + "\n")
    return {"rows_in": int(raw["events"] or 0), "rows_out": sum(split["events"].values()), **split}


def _first_seen_counts(kept) -> dict[str, int]:
    """How many items are first seen in each period (items of validation/test not seen in train are cold)."""
    from pyspark.sql import functions as F

    rank = F.lit(0)
    for s, i in _RANK.items():
        rank = F.when(F.col("_split") == s, F.lit(i)).otherwise(rank)
    first = (kept.select(rank.alias("r"), F.explode(F.transform("ev", lambda e: e["i"])).alias("item"))
             .groupBy("item").agg(F.min("r").alias("r")).groupBy("r").count().collect())
    got = {int(row["r"]): int(row["count"]) for row in first}
    return {s: got.get(i, 0) for s, i in _RANK.items()}


def _build_items(spark, ingest_dir: Path, dataset: DatasetConfig, kept, out: Path) -> dict:
    """`items/` + `item_vocab.json`: attribute ids learnt on the items of train sessions (0 missing, 1 unknown)."""
    from pyspark.sql import functions as F

    seen = kept.select("_split", F.explode(F.transform("ev", lambda e: e["i"])).alias("item_id"))
    seen_items = seen.select("item_id").distinct()
    train_items = seen.where(F.col("_split") == "train").select("item_id").distinct()
    it = dataset.items
    items_path = ingest_dir / "items"
    if it is None or not items_path.exists():
        table = seen_items.withColumn("in_catalogue", F.lit(False))
        table.repartition(1).sortWithinPartitions("item_id").write.mode("overwrite").parquet(str(out / "items"))
        (out / "item_vocab.json").write_text(json.dumps({"sizes": {}, "ids": {}, "built_on": "no item table"}, indent=2) + "\n")
        n = seen_items.count()
        return {"items_missing_metadata": n, "events_missing_metadata": None, "unknown_attribute_values": {}}
    cat, multi = list(it.categorical), list(it.multi_valued)
    catalogue = spark.read.parquet(str(items_path)).withColumnRenamed(it.item_id, "item_id")
    catalogue = catalogue.select(F.col("item_id").cast("string").alias("item_id"), *cat, *multi)
    train_meta = catalogue.join(train_items, "item_id", "left_semi")
    if cat or multi:
        vocab = assign_ids(value_counts(train_meta, cat, multi), min_count=1).persist()
    else:  # a catalogue of ids only (no dataset.items.categorical / multi_valued): ID models need no more
        vocab = spark.createDataFrame([], "feature string, value string, id long, count long")
    ids = {}
    for row in vocab.orderBy("feature", "id").collect():  # the item vocabularies are small: attribute values
        ids.setdefault(row["feature"], {})[row["value"]] = int(row["id"])
    sizes = {a: FIRST_ID + len(ids.get(a, {})) for a in cat + multi}
    enc = catalogue
    for a in cat:
        v = F.broadcast(vocab.where(F.col("feature") == a).select(F.col("value").alias("_v"), F.col("id").alias("_id")))
        enc = (enc.join(v, enc[a].cast("string") == v["_v"], "left")
               .withColumn(a, F.coalesce("_id", F.when(F.col(a).isNull(), F.lit(MISSING_ID)).otherwise(F.lit(UNKNOWN_ID))).cast("int"))
               .drop("_v", "_id"))
    for a in multi:
        v = F.broadcast(vocab.where(F.col("feature") == a).select(F.col("value").alias("_v"), F.col("id").alias("_id")))
        tok = (catalogue.select("item_id", F.posexplode(a).alias("pos", "_v")).join(v, "_v", "left")
               .groupBy("item_id").agg(F.array_sort(F.collect_list(F.struct("pos", F.coalesce("_id", F.lit(UNKNOWN_ID)).cast("int").alias("id")))).alias("_a")))
        enc = (enc.drop(a).join(tok, "item_id", "left")
               .withColumn(a, F.coalesce(F.transform("_a", lambda x: x["id"]), F.array().cast("array<int>"))).drop("_a"))
    enc = enc.withColumn("in_catalogue", F.lit(True))
    missing = seen_items.join(catalogue.select("item_id"), "item_id", "left_anti")
    fill = [F.lit(MISSING_ID).alias(a) for a in cat] + [F.array().cast("array<int>").alias(a) for a in multi]
    table = enc.select("item_id", *cat, *multi, "in_catalogue").unionByName(
        missing.select("item_id", *fill, F.lit(False).alias("in_catalogue")))
    table.repartition(1).sortWithinPartitions("item_id").write.mode("overwrite").parquet(str(out / "items"))
    written = spark.read.parquet(str(out / "items"))
    unknown = written.agg(*[F.sum((F.col(a) == UNKNOWN_ID).cast("long")).alias(a) for a in cat],
                          *[F.sum(F.size(F.filter(a, lambda x: x == UNKNOWN_ID))).alias(a) for a in multi]).first() \
        if cat or multi else {}
    n_missing = missing.count()
    missing_events = (kept.select(F.explode(F.transform("ev", lambda e: e["i"])).alias("item_id"))
                      .join(catalogue.select("item_id"), "item_id", "left_anti").count())
    vocab.unpersist()
    (out / "item_vocab.json").write_text(json.dumps({"sizes": sizes, "ids": ids,
                                                     "built_on": "items of train sessions"}, indent=2, sort_keys=True) + "\n")
    return {"items_missing_metadata": n_missing, "events_missing_metadata": missing_events,
            "unknown_attribute_values": {a: int(unknown[a] or 0) for a in cat + multi},
            "item_attribute_sizes": sizes}

"""Spark job: the Parquet files the Feast feature views read, and `layout.json` describing them.

From the `aggregates` stage output (ingest rows + event_id + windowed aggregates) it writes, under
`out/data/`:
- `events/`: one row per event: event_id, entity keys, `event_timestamp` (a real timestamp, UTC),
  the raw timestamp column, the label, and the selected features: vocabulary ids (int64) and
  encoded dense values (float32, log1p(max(x, 0)), missing -> 0) when a vocab is given, else the
  raw values;
- `user_stats/`, `item_stats/`: one row per (key, event time): the aggregates as of that time
  (computed from earlier events only), so a point-in-time join never sees the event itself;
- `items/` (session data): the item-metadata table, stamped at the first event time, no TTL.
Entity keys are stored as `user_id` / `item_id` / `session_id` (raw values; see `join_key`).
Missing keys are written as `MISSING_KEY` in `events/` (so entity rows stay complete) and have no
stats rows (counted in the summary, never dropped silently).

Example::

    layout = write_sources(agg_dir, out, dataset, spark, vocab_dir=run / "vocab")
    [v["name"] for v in layout["views"]]
    # -> ['events', 'user_stats', 'item_stats']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from features.aggregates import EVENT_ID, entity_keys
from features.config import DatasetConfig
from features.errors import DataError

TIMESTAMP = "event_timestamp"
MISSING_KEY = "<missing>"
LAYOUT = "layout.json"
SERVICES = {"ctr": {"dlrm": ["events", "user_stats", "item_stats"], "dcn": ["events", "user_stats", "item_stats"],
                    "lr": ["events", "user_stats", "item_stats"]},
            "sessions": {"m2trec": ["items", "item_stats", "user_stats"], "sasrec": ["item_stats"],
                         "gru4rec": ["item_stats"], "popularity": ["item_stats"]}}
SERVICES["interactions"] = SERVICES["sessions"]


def join_key(entity: str) -> str:
    """The store's column for an entity's key: `user_id`, `item_id`, `session_id` (raw values, string).

    Not the dataset's own column name: a CTR key column (e.g. C10) is also a feature (its vocab id).
    """
    return f"{entity}_id"


def read_selected_features(spec_path: Path | None, dataset: DatasetConfig) -> tuple[list[str], list[str]]:
    """(categorical, dense) features for the events view: the spec's `selected` ones, else all roles."""
    cat, dense = list(dataset.roles.categorical), list(dataset.roles.dense)
    if spec_path is None:
        return cat, dense
    if not spec_path.exists():
        raise DataError(f"{spec_path}: feature spec not found; run `sparserec features rank` or leave out --rank.")
    data = json.loads(spec_path.read_text())
    records = data["features"] if isinstance(data, dict) else data
    chosen = {r["name"] for r in records if r.get("selected", True)}
    return [c for c in cat if c in chosen], [d for d in dense if d in chosen]


def _spark_type_name(dtype) -> str:
    from pyspark.sql import types as T

    simple = {T.StringType: "string", T.LongType: "int64", T.IntegerType: "int32", T.DoubleType: "float64",
              T.FloatType: "float32", T.BooleanType: "bool", T.TimestampType: "timestamp"}
    if isinstance(dtype, T.ArrayType):
        inner = _spark_type_name(dtype.elementType)
        return f"array<{inner}>"
    for cls, name in simple.items():
        if isinstance(dtype, cls):
            return name
    raise DataError(f"feature store: column type {dtype.simpleString()} has no Feast type; cast it at ingest.")


def _encode(df, categorical: list[str], dense: list[str], vocab_dir: Path, spark):
    """Categorical -> vocab ids (0 missing, 1 unknown), dense -> float32 by the vocab stage's `dense_transforms`
    (schema.json; log1p(max(x,0)) with missing -> 0 for a vocab folder without them)."""
    from pyspark.sql import functions as F

    vpath = vocab_dir / "vocab"
    if not vpath.exists():
        raise DataError(f"{vpath}: vocabulary not found; run `sparserec features vocab` or leave out --vocab.")
    vocab = spark.read.parquet(str(vpath)).select("feature", "value", "id")
    sizes = json.loads((vocab_dir / "sizes.json").read_text()) if (vocab_dir / "sizes.json").exists() else {}
    for c in categorical:
        ids = vocab.where(F.col("feature") == c).select(F.col("value").alias(c), F.col("id").alias(f"{c}__id"))
        df = df.join(F.broadcast(ids), on=c, how="left")
        df = df.withColumn(c, F.when(F.col(c).isNull(), F.lit(0)).otherwise(F.coalesce(F.col(f"{c}__id"), F.lit(1)))
                           .cast("long")).drop(f"{c}__id")
    schema = vocab_dir / "schema.json"
    records = json.loads(schema.read_text()).get("dense_transforms", {}) if schema.exists() else {}
    for d in dense:
        if d in records:  # the vocab stage's own per-column transform (features/numeric.py)
            from features.numeric import DenseTransform, dense_sql

            df = df.withColumn(d, F.expr(dense_sql(f"CAST(`{d}` AS DOUBLE)", DenseTransform.from_dict(records[d]))))
        else:
            df = df.withColumn(d, F.coalesce(F.log1p(F.greatest(F.col(d).cast("double"), F.lit(0.0))), F.lit(0.0))
                               .cast("float"))
    return df, {c: int(sizes[c]) for c in categorical if c in sizes}


def _write(df, path: Path, spark) -> None:
    """Parquet with timestamps as TIMESTAMP_MICROS (UTC) so pandas/dask read them as timestamps."""
    key = "spark.sql.parquet.outputTimestampType"
    old = spark.conf.get(key, None)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        df.coalesce(1).write.mode("overwrite").parquet(str(path))
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)


def _view(name: str, entities: list[str], df, features: list[str], ttl: bool) -> dict[str, Any]:
    types = {f.name: _spark_type_name(f.dataType) for f in df.schema.fields}
    return {"name": name, "entities": entities, "path": f"data/{name}", "ttl": ttl,
            "features": {f: types[f] for f in features}, "online": is_online(entities)}


def is_online(entities: list[str]) -> bool:
    """Only entity-level views go to the online store; a per-event view (one row per event, read by
    point-in-time training sets) would fill it with a row per event that no one looks up.

    Example:
        >>> is_online(["user"]), is_online(["event"])
        (True, False)
    """
    return entities != ["event"]


def write_sources(agg_dir: Path, out: Path, dataset: DatasetConfig, spark, vocab_dir: Path | None = None,
                  spec_path: Path | None = None, ingest_dir: Path | None = None) -> dict[str, Any]:
    """Write the view sources under `out/data/` and `out/layout.json`; return the layout (+ counts)."""
    from pyspark.sql import functions as F

    path = Path(agg_dir) / "data"
    meta_path = Path(agg_dir) / "aggregates.json"
    if not path.exists() or not meta_path.exists():
        raise DataError(f"{agg_dir}: the aggregates output is missing; run `sparserec features aggregates` first.")
    meta = json.loads(meta_path.read_text())
    df = spark.read.parquet(str(path))
    ts, label, keys = dataset.roles.timestamp, meta["label"], entity_keys(dataset)
    for ent, col in keys.items():
        if col not in df.columns:
            raise DataError(f"{path}: entity key column '{col}' (dataset.roles.{ent}_id) is not in the data; "
                            "fix the role in the config or re-run ingest and aggregates.")
    # the aggregates stage has already refused null timestamps
    categorical, dense = read_selected_features(spec_path, dataset)
    missing = [c for c in categorical + dense if c not in df.columns]
    if missing:
        raise DataError(f"{path}: feature column '{missing[0]}' (dataset.roles) is not in the data; fix the roles.")
    df = df.withColumn(TIMESTAMP, F.timestamp_seconds(F.col(ts)))
    joins = {e: join_key(e) for e in keys}
    clash = [j for j in joins.values() if j in categorical + dense]
    if clash:
        raise DataError(f"dataset '{dataset.name}': feature column '{clash[0]}' has the name the store gives an entity "
                        "key; rename that column at ingest (dataset.columns) so the two can be told apart.")
    # raw key values are taken before encoding: a key column may also be an encoded feature
    events = df
    for e, c in keys.items():
        events = events.withColumn(joins[e], F.coalesce(F.col(c), F.lit(MISSING_KEY)))
    vocab_sizes: dict[str, int] = {}
    if vocab_dir is not None:
        events, vocab_sizes = _encode(events, categorical, dense, Path(vocab_dir), spark)
    events = events.select(EVENT_ID, *joins.values(), TIMESTAMP, ts, *([label] if label else []), *categorical, *dense)
    events = events.orderBy(EVENT_ID)
    views, counts = [], {}
    _write(events, out / "data" / "events", spark)   # also the entity rows of training sets
    if categorical or dense:
        views.append(_view("events", ["event"], events, categorical + dense, ttl=True))
    for ent in ("user", "item"):
        cols = [c for c in meta["columns"] if c.startswith(f"{ent}_")]
        if ent not in keys or not cols:
            continue
        key = keys[ent]
        stats = (df.where(F.col(key).isNotNull()).select(F.col(key).alias(joins[ent]), TIMESTAMP, *cols)
                 .dropDuplicates([joins[ent], TIMESTAMP]).orderBy(joins[ent], TIMESTAMP))
        _write(stats, out / "data" / f"{ent}_stats", spark)
        views.append(_view(f"{ent}_stats", [ent], stats, cols, ttl=True))
    if dataset.items is not None and "item" in keys:
        items_path = Path(ingest_dir or "") / "items"
        if ingest_dir is None or not items_path.exists():
            raise DataError(f"{items_path}: the item table of '{dataset.name}' is missing; pass the ingest folder "
                            "(--ingest) that holds items/.")
        items = spark.read.parquet(str(items_path)).withColumnRenamed(dataset.items.item_id, joins["item"])
        first = int(df.agg(F.min(ts)).first()[0])   # epoch seconds: no driver time zone involved
        attrs = [c for c in dataset.items.categorical + dataset.items.multi_valued if c in items.columns]
        items = items.select(joins["item"], F.timestamp_seconds(F.lit(first)).alias(TIMESTAMP), *attrs)
        items = items.orderBy(joins["item"])
        _write(items, out / "data" / "items", spark)
        views.append(_view("items", ["item"], items, attrs, ttl=False))
    entities = {"event": {"join_key": EVENT_ID, "type": "int64"},
                **{e: {"join_key": joins[e], "column": c, "type": "string"} for e, c in keys.items()}}
    present = {v["name"] for v in views}
    services = {m: [v for v in vs if v in present] for m, vs in SERVICES[dataset.kind].items()}
    layout = {"kind": dataset.kind, "dataset": dataset.name, "timestamp": TIMESTAMP, "event_time": ts,
              "label": label, "entities": entities, "views": views, "encoded": vocab_dir is not None,
              "categorical": categorical, "dense": dense, "aggregates": meta["columns"], "vocab_sizes": vocab_sizes,
              "services": {m: vs for m, vs in services.items() if vs}}
    (out / LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")
    stats_keys = [e for e in ("user", "item") if any(v["name"] == f"{e}_stats" for v in views)]
    row = df.agg(F.count(F.lit(1)).alias("events"),
                 *[F.sum(F.col(c).isNull().cast("long")).alias(f"null_{e}") for e, c in keys.items()],
                 *[F.countDistinct(keys[e], TIMESTAMP).alias(f"{e}_stats") for e in stats_keys]).first()
    counts["events_rows"] = int(row["events"])
    counts["events_without_key"] = {e: int(row[f"null_{e}"] or 0) for e in keys}
    counts.update({f"{e}_stats_rows": int(row[f"{e}_stats"]) for e in stats_keys})
    return {**layout, "counts": counts}

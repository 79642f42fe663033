"""Vocabularies of categorical features (built on the train period) and their application in Spark.

Ids: 0 = missing, 1 = unknown or rare (count < `min_count`, or beyond `max_size`), 2.. by train
count descending, ties broken by value, so re-runs give the same ids. Applying a vocabulary is a
join per feature against one shared broadcast keyed by the hash of (feature, value), matched
exactly (no Python UDF); values that map to 1 are counted.

Example::

    counts = value_counts(train_df, ["C1", "C2"])
    vocab = assign_ids(counts, min_count=2)
    encoded = apply_vocab(df, vocab, ["C1", "C2"])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from features.config import DatasetConfig, VocabConfig
from features.errors import DataError
from features.numeric import DenseTransform, bucket_sql, dense_sql, fit_transforms

MISSING_ID, UNKNOWN_ID, FIRST_ID = 0, 1, 2
BROADCAST_MAX_ROWS = 2_000_000  # larger vocabularies are joined by shuffle, as Spark decides
DENSE_TRANSFORM = "per column, see dense_transforms (features/numeric.py)"
ENCODE_BATCH = 32  # up to this many single-valued features are joined one by one; more go through one long form


def vocab_features(dataset: DatasetConfig) -> tuple[list[str], list[str]]:
    """(single-valued, multi-valued) columns that get a vocabulary: categorical and id roles."""
    r = dataset.roles
    single = list(r.categorical)
    if dataset.kind != "ctr":
        single += [c for c in (r.user_id, r.item_id) if c is not None and c not in single]
    return single, list(r.multi_valued)


def _tag(feature: str):
    """A one-argument lambda for `F.transform` (a second argument would be taken as the index)."""
    from pyspark.sql import functions as F

    return lambda x: F.struct(F.lit(feature).alias("feature"), x.alias("value"))


def value_counts(df, single: list[str], multi: list[str] | None = None):
    """`(feature, value, count)` over non-null values of the given columns, in one shuffle."""
    from pyspark.sql import functions as F

    pair = "struct<feature:string,value:string>"
    arrays = []
    if single:
        arrays.append(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                                for c in single]))
    for m in multi or []:
        arr = F.coalesce(F.col(m), F.array().cast("array<string>"))
        arrays.append(F.transform(arr, _tag(m)).cast(f"array<{pair}>"))
    if not arrays:
        raise DataError("no categorical columns to build a vocabulary from; list them in dataset.roles.categorical.")
    stacked = df.select(F.explode(F.concat(*arrays) if len(arrays) > 1 else arrays[0]).alias("p"))
    return (stacked.select("p.feature", "p.value").where(F.col("value").isNotNull())
            .groupBy("feature", "value").agg(F.count(F.lit(1)).alias("count")))


def assign_ids(counts, min_count: int, max_size: int | None = None):
    """Ids 2.. by count desc, ties by value, per feature; values below `min_count` or past `max_size` are left out."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("feature").orderBy(F.col("count").desc(), F.col("value").asc())
    ranked = counts.where(F.col("count") >= min_count).withColumn("id", F.row_number().over(w) + (FIRST_ID - 1))
    if max_size is not None:
        ranked = ranked.where(F.col("id") < max_size)
    return ranked.select("feature", "value", F.col("id").cast("long").alias("id"), F.col("count").cast("long").alias("count"))


def vocab_sizes(vocab, features: list[str]) -> dict[str, int]:
    """Feature -> number of ids including the 2 reserved ones."""
    from pyspark.sql import functions as F

    got = {r["feature"]: int(r["m"]) + 1 for r in vocab.groupBy("feature").agg(F.max("id").alias("m")).collect()}
    return {f: got.get(f, FIRST_ID) for f in features}


def apply_vocab(df, vocab, features: list[str], sizes: Mapping[str, int] | None = None,
                multi: list[str] | None = None, batch: int | None = None):
    """Replace each feature's values by int64 ids: null -> 0, not in the vocabulary -> 1.

    `multi` columns (array<string>) become array<bigint> bags: each value mapped the same way, a
    null or empty list -> [0]. Up to `batch` (default `ENCODE_BATCH`) single-valued columns are
    encoded by one (broadcast) join each, map-side; more are encoded in one long form (row id,
    feature, value) joined once with the vocabulary and collected back per row, so the plan Spark
    analyses and compiles does not grow with the column count beyond one projection. Multi-valued
    columns always take a long form (row id, feature, position, value).

    Example::

        apply_vocab(df, vocab, ["C1"]).select("C1").first()[0]
        # -> 2
        apply_vocab(df, vocab, [], multi=["genres"]).select("genres").first()[0]
        # -> [3, 2]
    """
    batch = batch or ENCODE_BATCH
    out = df
    if len(features) > batch:
        out = _encode_long(out, vocab, list(features), sizes)
    elif features:
        out = _join_ids(out, vocab, list(features), sizes)
    if multi:
        if features:
            out = out.localCheckpoint(eager=True)
        out = _encode_multi(out, vocab, list(multi))
    return out


def _encode_long(df, vocab, features: list[str], sizes: Mapping[str, int] | None):
    """Many single-valued columns at once: (row id, k, feature, value) rows, one join with the vocabulary,
    the ids collected per row in feature order and put back as columns."""
    from pyspark.sql import functions as F

    base = df.withColumn("_rid", F.monotonically_increasing_id()).localCheckpoint(eager=True)  # ids fixed once
    tagged = F.array(*[F.struct(F.lit(k).alias("k"), F.lit(f).alias("feature"), F.col(f).cast("string").alias("value"))
                       for k, f in enumerate(features)])
    long = base.select("_rid", F.inline(tagged))
    voc = vocab.where(F.col("feature").isin(features)).select("feature", "value", "id")
    if sizes is None or sum(sizes.get(f, 0) for f in features) <= BROADCAST_MAX_ROWS:
        voc = F.broadcast(voc)
    ids = long.join(voc, ["feature", "value"], "left").select(
        "_rid", F.struct("k", F.coalesce(F.col("id"), F.when(F.col("value").isNull(), F.lit(MISSING_ID))
                                         .otherwise(F.lit(UNKNOWN_ID))).cast("long").alias("id")).alias("p"))
    rows = ids.groupBy("_rid").agg(F.transform(F.array_sort(F.collect_list("p")), lambda p: p["id"]).alias("_ids"))
    joined = base.join(rows, "_rid")
    pos = {f: k for k, f in enumerate(features)}
    return joined.select(*[F.col("_ids")[pos[c]].alias(c) if c in pos else F.col(c) for c in df.columns])


def _join_ids(df, vocab, features: list[str], sizes: Mapping[str, int] | None):
    """One plan: a left join per feature, then one select that puts the ids in place.

    When the features' vocabularies fit one broadcast together (`BROADCAST_MAX_ROWS`), every join
    probes the SAME broadcast table, keyed by the 64-bit hash of (feature, value): Spark builds and
    ships it once (one job, not one per feature) and probes it on a long key; a match also needs
    the exact (feature, value) equality, so a hash collision can never give a value another's id.
    Otherwise each feature's vocabulary is joined on its own (broadcast when small).
    """
    from pyspark.sql import functions as F

    out = df
    if sizes is None or sum(sizes.get(f, 0) for f in features) <= BROADCAST_MAX_ROWS:
        shared = F.broadcast(vocab.where(F.col("feature").isin(features)).select(
            F.xxhash64("feature", "value").alias("_vocab_h"), F.col("feature").alias("_vocab_f"),
            F.col("value").alias("_vocab_v"), F.col("id").alias("_vocab_id")))
        for i, f in enumerate(features):
            v, value = shared.alias(f"_vocab{i}"), df[f].cast("string")
            same = F.coalesce((F.col(f"_vocab{i}._vocab_v") == value) & (F.col(f"_vocab{i}._vocab_f") == F.lit(f)), F.lit(False))
            out = (out.join(v, (F.xxhash64(F.lit(f), value) == F.col(f"_vocab{i}._vocab_h")) & same, "left")
                   .select(*[F.col(f"`{c}`") for c in out.columns], F.col(f"_vocab{i}._vocab_id").alias(f"_id{i}")))
    else:
        for i, f in enumerate(features):
            ids = vocab.where(F.col("feature") == f).select(F.col("value").alias(f"_v{i}"), F.col("id").alias(f"_id{i}"))
            if sizes.get(f, 0) <= BROADCAST_MAX_ROWS:
                ids = F.broadcast(ids)
            out = out.join(ids, df[f].cast("string") == ids[f"_v{i}"], "left")
    pos = {f: i for i, f in enumerate(features)}
    return out.select(*[F.coalesce(F.col(f"_id{pos[c]}"), F.when(df[c].isNull(), F.lit(MISSING_ID))
                                   .otherwise(F.lit(UNKNOWN_ID))).cast("long").alias(c) if c in pos else df[c]
                        for c in df.columns])


def _encode_multi(df, vocab, multi: list[str]):
    """array<string> columns -> array<bigint> id bags, in order (null element -> 0, null/empty list -> [0])."""
    from pyspark.sql import functions as F

    base = df.withColumn("_rid", F.monotonically_increasing_id()).localCheckpoint(eager=True)  # ids fixed once
    tagged = [F.transform(F.coalesce(F.col(m).cast("array<string>"), F.array().cast("array<string>")),
                          _tag_pos(m)) for m in multi]
    long = base.select("_rid", F.inline(F.concat(*tagged) if len(tagged) > 1 else tagged[0]))
    voc = vocab.where(F.col("feature").isin(multi)).select("feature", "value", "id")
    ids = (long.join(F.broadcast(voc), ["feature", "value"], "left")
           .select("_rid", "feature", "pos", F.coalesce(F.col("id"), F.when(F.col("value").isNull(), F.lit(MISSING_ID))
                                                        .otherwise(F.lit(UNKNOWN_ID))).cast("long").alias("id")))
    bags = ids.groupBy("_rid").agg(F.array_sort(F.collect_list(F.struct("feature", "pos", "id"))).alias("_bag"))
    joined = base.join(bags, "_rid", "left")
    empty = F.array(F.lit(MISSING_ID).cast("long"))
    cols = []
    for c in df.columns:
        if c in multi:
            got = F.transform(F.filter(F.coalesce(F.col("_bag"), F.array()), _is_feature(c)), lambda x: x["id"])
            cols.append(F.when(F.size(got) > 0, got).otherwise(empty).alias(c))
        else:
            cols.append(F.col(c))
    return joined.select(*cols)


def _tag_pos(feature: str):
    """A two-argument lambda for `F.transform`: (value, index) -> struct(feature, pos, value)."""
    from pyspark.sql import functions as F

    return lambda x, i: F.struct(F.lit(feature).alias("feature"), i.alias("pos"), x.alias("value"))


def _is_feature(feature: str):
    from pyspark.sql import functions as F

    return lambda x: x["feature"] == F.lit(feature)


def unseen_counts(encoded, features: list[str], multi: list[str] | None = None) -> dict[str, int]:
    """Per feature, how many rows hold a value that mapped to the unknown id 1 (one pass over a long
    form, so the plan does not grow with the column count); a multi-valued row counts once when any
    of its values did."""
    from pyspark.sql import functions as F

    multi = list(multi or [])
    if not features and not multi:
        return {}
    hits = [F.struct(F.lit(f).alias("feature"), (F.col(f) == UNKNOWN_ID).alias("hit")) for f in features]
    hits += [F.struct(F.lit(m).alias("feature"), F.exists(F.col(m), lambda x: x == UNKNOWN_ID).alias("hit")) for m in multi]
    got = {r["feature"]: int(r["count"]) for r in encoded.select(F.inline(F.array(*hits))).where(F.col("hit"))
           .groupBy("feature").count().collect()}
    return {f: got.get(f, 0) for f in [*features, *multi]}


def build_vocab(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: VocabConfig, spark) -> dict:
    """Vocab stage: `vocab/`, `sizes.json`, and for `ctr` data `encoded/<split>/` and `schema.json`.

    Example (needs a SparkSession, so shown, not run; tests/features/test_vocab.py runs it)::

        s = build_vocab({"ingest": Path("runs/r/ingest")}, Path("out"), ds, VocabConfig(), spark)
        s["vocab_sizes"]["C1"]      # 10
    """
    from pyspark.sql import functions as F

    from features.config import resolve_split
    from features.split import order_column, random_cuts, row_number_column, split_column, time_cuts

    out = Path(out)
    data_path = Path(inputs["ingest"]) / "data"
    if not data_path.exists():
        raise DataError(f"{inputs['ingest']}: no data/ folder; pass the output folder of the ingest stage (--input).")
    df = spark.read.parquet(str(data_path))
    r = dataset.roles
    single, multi = vocab_features(dataset)
    missing = [c for c in single + multi if c not in df.columns]
    if missing:
        raise DataError(f"{data_path}: column '{missing[0]}' of the dataset roles is not in the ingested data; "
                        "re-run ingest with the current config.")
    # the split never reads the label: timestamps, or a seeded hash of the row's place / split_key (#18.3)
    method, seed = resolve_split(dataset, cfg), cfg.split_seed or 0
    absent = [c for c in cfg.split_key if c not in df.columns]
    if absent:
        raise DataError(f"{data_path}: features.vocab.split_key column '{absent[0]}' is not in the ingested data "
                        f"({', '.join(df.columns[:12])}); fix the name.")
    df = df.withColumn("_row", row_number_column(df))
    cuts = (time_cuts(df, r.timestamp, cfg.validation_share, cfg.test_share) if method == "time"
            else random_cuts(cfg.validation_share, cfg.test_share, seed, cfg.split_key))
    df = (df.withColumn("_split", split_column(cuts, r.timestamp, F.col("_row")))
          .withColumn("_order", order_column(seed, F.col("_row"))).drop("_row"))
    counts = value_counts(df.where(F.col("_split") == "train"), single, multi)
    vocab = assign_ids(counts, cfg.min_count, cfg.max_size)
    vocab.repartition(1).sortWithinPartitions("feature", "id").write.mode("overwrite").parquet(str(out / "vocab"))
    vocab = spark.read.parquet(str(out / "vocab"))
    features = single + multi
    sizes = vocab_sizes(vocab, features)
    transforms = []
    if dataset.kind == "ctr":  # dense transforms and bucket splits are chosen on the train split too
        transforms = fit_transforms(spark, df.where(F.col("_split") == "train"), list(r.dense), cfg.numeric_buckets)
        sizes.update({t.bucket_column: len(t.bucket_splits) + 2 for t in transforms if t.bucket_column})
    (out / "sizes.json").write_text(json.dumps(sizes, indent=2) + "\n")
    summary: dict = {"rows_in": None, "vocab_sizes": sizes, "cuts": cuts.to_dict(), "min_count": cfg.min_count}
    if dataset.kind == "ctr":
        summary.update(_encode_ctr(spark, df, vocab, sizes, dataset, cuts, out, transforms))
    else:
        summary["rows_in"] = df.count()
    return summary


def _encode_ctr(spark, df, vocab, sizes: dict[str, int], dataset: DatasetConfig, cuts, out: Path,
                transforms: list[DenseTransform]) -> dict:
    """`encoded/train|validation|test/` (label int32, dense float32 by `transforms`, categorical and bucket int64
    ids, multi-valued array<int64> id bags) + schema.json."""
    from pyspark.sql import functions as F

    from features.split import SPLITS, write_by_split

    r = dataset.roles
    cat = list(r.categorical)
    dense = list(r.dense)
    multi = list(r.multi_valued)
    order = ([r.timestamp] if r.timestamp else []) + ["_order"]  # time, then seeded random: never by label
    # broadcast joins keep the rows' partitions: range-partition the cheap columns first, so the
    # range sampling does not compute the encoding (a shuffle join or a long form would move the rows)
    ranged = not multi and len(cat) <= ENCODE_BATCH and all(sizes.get(c, 0) <= BROADCAST_MAX_ROWS for c in cat)
    if ranged:
        df = df.repartitionByRange("_split", *order)
    enc = apply_vocab(df, vocab, cat, sizes, multi=multi)
    cols = [F.col(r.label).cast("int").alias(r.label)]
    cols += [F.expr(dense_sql(f"`{t.column}`", t)).alias(t.column) for t in transforms]
    buckets = [t.bucket_column for t in transforms if t.bucket_column]
    cols += [F.col(c) for c in cat]
    cols += [F.expr(bucket_sql(f"`{t.column}`", t.bucket_splits)).alias(t.bucket_column) for t in transforms if t.bucket_column]
    cols += [F.col(c) for c in multi]
    if r.timestamp:
        cols.append(F.col(r.timestamp))
    names = [r.label, *dense, *cat, *buckets, *multi] + ([r.timestamp] if r.timestamp else [])
    rows = write_by_split(enc.select(*cols, "_split", "_order"), "_split", out / "encoded", order, drop=["_order"],
                          ranged=ranged)
    unseen = {s: unseen_counts(spark.read.parquet(str(out / "encoded" / s)), cat, multi) if rows[s]
              else {c: 0 for c in [*cat, *multi]} for s in SPLITS}
    schema = {"label": r.label, "dense": dense, "categorical": cat, "multi_valued": multi, "timestamp": r.timestamp,
              "buckets": buckets, "columns": names, "vocab_sizes": {c: sizes[c] for c in [*cat, *buckets, *multi]},
              "rows": rows, "unseen": unseen, "cuts": cuts.to_dict(), "dense_transform": DENSE_TRANSFORM,
              "dense_transforms": {t.column: t.to_dict() for t in transforms},
              "ids": {"missing": MISSING_ID, "unknown": UNKNOWN_ID, "first": FIRST_ID}}
    (out / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    total = sum(rows.values())
    return {"rows_in": total, "rows_out": total, "rows": rows, "unseen": unseen}

"""Data-quality report of ingested data: cardinality (exact and HyperLogLog), coverage, top values,
rare values, constant features, label leakage and train/test drift, in a few Spark passes.

Passes: (1) one aggregate over the timestamp column alone for the row count and the test-period
cut; (2) one shuffle to per-(feature, value) counts split by period and label, kept in memory; then
small aggregates over that table (per-feature statistics with non-null counts and HLL
cardinalities, top values, drift buckets). Only per-feature results reach the driver.

Leakage is judged out of sample: each value predicts the majority label it had in the train period,
scored on the test period; `leakage_lift = (accuracy - baseline) / (1 - baseline)` where the
baseline predicts the overall train majority. A copy of the label scores 1, a high-cardinality id
(which fits the train period perfectly) scores near 0. The in-sample normalized mutual
information is reported too.

Example (needs a SparkSession, so shown, not run; tests/features/test_quality.py runs it)::

    summary = quality_report({"ingest": Path("runs/r/ingest")}, Path("out"), ds, QualityConfig(), spark)
    summary["drift"]        # ['C13']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from features.config import DatasetConfig, QualityConfig
from features.drift import js_divergence, psi
from features.errors import DataError

HLL_RSD = 0.02          # relative standard deviation asked of approx_count_distinct
MISSING, OTHER = "(missing)", "(other)"


def quality_features(dataset: DatasetConfig) -> dict[str, str]:
    """Feature column -> role, for the columns the report covers (dense, categorical, ids)."""
    r = dataset.roles
    out: dict[str, str] = {c: "dense" for c in r.dense}
    out.update({c: "categorical" for c in r.categorical})
    for role in ("user_id", "item_id", "session_id"):
        c = getattr(r, role)
        if c is not None and c not in out:
            out[c] = role
    return out


def _entropy(p):
    """Binary entropy (nats) of a probability column, 0 at p in {0, 1}."""
    from pyspark.sql import functions as F

    def term(x):
        return F.when(x > 0, -x * F.log(x)).otherwise(F.lit(0.0))

    return term(p) + term(1 - p)


def compute_quality(df, features: Mapping[str, str], label: str | None, ts: str | None, cfg: QualityConfig) -> dict:
    """All statistics of the report as a JSON-able dict (see module docstring)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from features.split import SplitCuts, row_number_column, split_column, time_cuts

    names = list(features)
    # pass 1 reads the timestamp alone: the row count and the cut of the test period (the same cut as
    # features.split.time_cuts); non-null counts and HLL cardinalities come from the value counts below
    cut_q = [F.percentile_approx(F.col(ts), [1.0 - cfg.test_share], 100_000).alias("_cut")] if ts else []
    first = df.agg(F.count(F.lit(1)).alias("_rows"), *cut_q).first()
    rows = int(first["_rows"])
    if rows == 0:
        raise DataError("the ingested data has no rows; nothing to report (check the ingest quarantine).")
    cuts = (SplitCuts("time", None, float(first["_cut"][0])) if ts else time_cuts(df, None, 0.0, cfg.test_share))
    is_test = (split_column(cuts, ts, None if ts else row_number_column(df)) == "test").cast("int")  # never by label
    y = F.col(label).cast("int") if label else F.lit(0)
    # pass 2: per (feature, value) counts by period and label
    stacked = df.select(is_test.alias("t"), y.alias("y"),
                        F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                                            for c in names])).alias("p"))
    counts = (stacked.groupBy(F.col("p.feature").alias("feature"), F.col("p.value").alias("value"))
              .agg(F.count(F.lit(1)).alias("n"),
                   F.sum("t").alias("n_test"),
                   F.sum(F.col("y") * (1 - F.col("t"))).alias("pos_train"),
                   F.sum(F.col("y") * F.col("t")).alias("pos_test"),
                   F.sum("y").alias("pos"))
              .withColumn("n_train", F.col("n") - F.col("n_test"))
              .persist(StorageLevel.MEMORY_AND_DISK))
    totals = counts.where(F.col("feature") == names[0]).agg(
        F.sum("n_test").alias("n_test"), F.sum("pos_train").alias("pos_train"),
        F.sum("pos_test").alias("pos_test"), F.sum("pos").alias("pos")).first()
    n_test = int(totals["n_test"] or 0)
    n_train = rows - n_test
    majority = 1 if 2 * int(totals["pos_train"] or 0) > n_train else 0
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    per_feature = _per_feature(counts, rows, n_test, int(totals["pos_test"] or 0), int(totals["pos"] or 0),
                               majority, label is not None, {c: types[c] for c in names})
    top = _top_values(counts, cfg.top_values)
    buckets = _drift_buckets(counts, cfg.drift_buckets)
    counts.unpersist()

    report: dict = {"rows": rows, "label": label, "timestamp": ts,
                    "periods": {"method": cuts.method, "test_start": cuts.test_start, "train_rows": n_train, "test_rows": n_test},
                    "features": {}}
    for c in names:
        st = per_feature.get(c, {})
        nn = int(st.get("non_null", 0))
        exact = int(st.get("distinct", 0))
        hll = int(st.get(_hll_alias(types[c]), 0))
        b = buckets.get(c, {})
        train_counts = [v[0] for v in b.values()]
        test_counts = [v[1] for v in b.values()]
        drift_psi = psi(train_counts, test_counts) if n_test and n_train and b else 0.0
        rec = {
            "role": features[c], "cardinality": exact, "cardinality_hll": hll,
            "hll_relative_error": abs(hll - exact) / exact if exact else 0.0,
            "coverage": nn / rows, "missing_share": 1 - nn / rows,
            "top_values": [{"value": v, "count": n, "share": n / rows} for v, n in top.get(c, [])],
            "values_once": int(st.get("once", 0)), "values_lt10": int(st.get("lt10", 0)), "values_lt100": int(st.get("lt100", 0)),
            "constant": exact <= 1,
            "drift": {"psi": drift_psi, "js": js_divergence(train_counts, test_counts) if b else 0.0,
                      "buckets": {k: {"train": v[0], "test": v[1]} for k, v in b.items()}},
        }
        if label is not None:
            rec["leakage"] = {k: st.get(k) for k in ("heldout_accuracy", "baseline_accuracy", "lift", "nmi")}
        report["features"][c] = rec
    fs = report["features"]
    report["constant"] = [c for c in names if fs[c]["constant"]]
    report["leakage"] = ([c for c in names if (fs[c]["leakage"]["lift"] or 0.0) >= cfg.leakage_threshold]
                         if label is not None else [])
    report["drift"] = [c for c in names if fs[c]["drift"]["psi"] > cfg.drift_threshold]
    report["settings"] = cfg.model_dump()
    return report


def _hll_alias(type_name: str) -> str:
    return "hll_" + "".join(ch if ch.isalnum() else "_" for ch in type_name)


def _per_feature(counts, rows: int, n_test: int, pos_test: int, pos: int, majority: int, with_label: bool,
                 types: Mapping[str, str]) -> dict:
    """Cardinality (exact, and HLL), non-null rows, rare-value counts and (with a label) held-out accuracy
    and in-sample NMI per feature, from the (feature, value) counts.

    The HLL sketch of a column depends only on the set of its distinct values, so it is built here over
    the counted values, each cast back to its column's type (`types`, column -> Spark type name; a value
    is counted as text), which hashes as the column itself does: the same estimate as over every row,
    without a pass over the rows."""
    from pyspark.sql import functions as F

    known = F.col("value").isNotNull()
    hll = []
    for t in sorted(set(types.values())):
        of_type = F.col("feature").isin([c for c, ct in types.items() if ct == t])
        hll.append(F.approx_count_distinct(F.when(of_type, F.col("value").cast(t)), HLL_RSD).alias(_hll_alias(t)))
    aggs = [F.sum(known.cast("long")).alias("distinct"),
            F.sum(F.when(known, F.col("n")).otherwise(F.lit(0))).alias("non_null"), *hll,
            F.sum((known & (F.col("n") == 1)).cast("long")).alias("once"),
            F.sum((known & (F.col("n") < 10)).cast("long")).alias("lt10"),
            F.sum((known & (F.col("n") < 100)).cast("long")).alias("lt100")]
    if with_label:
        neg_train = F.col("n_train") - F.col("pos_train")
        pred = (F.when(F.col("pos_train") > neg_train, 1).when(F.col("pos_train") < neg_train, 0)
                .otherwise(F.lit(majority)))
        correct = F.when(pred == 1, F.col("pos_test")).otherwise(F.col("n_test") - F.col("pos_test"))
        h_cond = F.col("n") * _entropy(F.col("pos") / F.col("n"))
        aggs += [F.sum(correct).alias("correct"), F.sum(h_cond).alias("h_cond")]
    got = {}
    for r in counts.groupBy("feature").agg(*aggs).collect():
        d = r.asDict()
        if with_label:
            base_correct = pos_test if majority == 1 else n_test - pos_test
            acc = d["correct"] / n_test if n_test else None
            base = base_correct / n_test if n_test else None
            d["heldout_accuracy"], d["baseline_accuracy"] = acc, base
            d["lift"] = (acc - base) / (1 - base) if acc is not None and base is not None and base < 1 else None
            p = pos / rows
            h_y = 0.0 if p in (0.0, 1.0) else -(p * _ln(p) + (1 - p) * _ln(1 - p))
            d["nmi"] = max(0.0, (h_y - d["h_cond"] / rows) / h_y) if h_y > 0 else None
        got[d["feature"]] = d
    return got


def _ln(x: float) -> float:
    import math

    return math.log(x)


def _top_values(counts, k: int) -> dict[str, list[tuple[str, int]]]:
    """The k most frequent non-null values per feature (ties by value)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("feature").orderBy(F.col("n").desc(), F.col("value").asc())
    rows = (counts.where(F.col("value").isNotNull()).withColumn("rk", F.row_number().over(w))
            .where(F.col("rk") <= k).select("feature", "value", "n", "rk").collect())
    out: dict[str, list[tuple[str, int]]] = {}
    for r in sorted(rows, key=lambda r: (r["feature"], r["rk"])):
        out.setdefault(r["feature"], []).append((r["value"], int(r["n"])))
    return out


def _drift_buckets(counts, k: int) -> dict[str, dict[str, tuple[int, int]]]:
    """Per feature: (train, test) counts of its k most frequent train values, '(other)' and '(missing)'."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("feature").orderBy(F.col("n_train").desc(), F.col("value").asc())
    ranked = counts.withColumn("rk", F.when(F.col("value").isNotNull() & (F.col("n_train") > 0), F.row_number().over(w)))
    bucket = (F.when(F.col("value").isNull(), F.lit(MISSING))
              .when(F.col("rk").isNotNull() & (F.col("rk") <= k), F.col("value")).otherwise(F.lit(OTHER)))
    rows = (ranked.groupBy("feature", bucket.alias("bucket"))
            .agg(F.sum("n_train").alias("tr"), F.sum("n_test").alias("te")).collect())
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for r in sorted(rows, key=lambda r: (r["feature"], r["bucket"])):
        out.setdefault(r["feature"], {})[r["bucket"]] = (int(r["tr"]), int(r["te"]))
    return out


def quality_report(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: QualityConfig, spark) -> dict:
    """Quality stage: `quality.json`, `quality.md` and PNG plots under `out`."""
    from features.quality_render import render_markdown, render_plots

    out = Path(out)
    data_path = Path(inputs["ingest"]) / "data"
    if not data_path.exists():
        raise DataError(f"{inputs['ingest']}: no data/ folder; pass the output folder of the ingest stage (--input).")
    df = spark.read.parquet(str(data_path))
    features = quality_features(dataset)
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise DataError(f"{data_path}: column '{missing[0]}' of the dataset roles is not in the ingested data; "
                        "re-run ingest with the current config.")
    if not features:
        raise DataError("the dataset roles name no feature columns; list them in dataset.roles.dense/categorical.")
    label = dataset.roles.label if dataset.kind == "ctr" else None
    report = compute_quality(df, features, label, dataset.roles.timestamp, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    plots = render_plots(report, out)
    (out / "quality.md").write_text(render_markdown(report, plots, dataset.name))
    return {"rows_in": report["rows"], "features": len(features), "constant": report["constant"],
            "leakage": report["leakage"], "drift": report["drift"], "plots": plots}

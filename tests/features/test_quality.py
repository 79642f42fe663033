"""Quality report: statistics against a plain-Python reference, constant/leakage/drift findings, HLL accuracy,
and the ingest -> vocab -> quality chain on the real MovieLens 100K ratings."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from feature_stages import write_ingest_folder

from features.config import ColumnRoles, DatasetConfig, IngestConfig, QualityConfig, VocabConfig
from features.drift import js_divergence, psi
from features.quality import quality_report

pytestmark = pytest.mark.spark


def _hand_made(n: int = 400) -> list[dict]:
    rows = []
    for i in range(n):
        y = int((i * 7919) % 13 < 4)
        rows.append({"y": y, "t": i, "leak": f"L{y}", "const": "k",
                     "drift": ("a" if i % 10 else "b") if i < 300 else ("b" if i % 10 else "a"),
                     "noise": None if i % 11 == 0 else f"n{i % 5}", "d": float(i % 3)})
    return rows


def test_hand_made_findings_and_statistics_match_reference(spark, tmp_path):
    rows = _hand_made()
    ing = write_ingest_folder(spark, rows, "y int, t long, leak string, const string, drift string, noise string, d double",
                              tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", timestamp="t", dense=["d"],
                                                                  categorical=["leak", "const", "drift", "noise"]))
    cfg = QualityConfig(test_share=0.2, top_values=2, drift_buckets=5)
    s = quality_report({"ingest": ing}, tmp_path / "q", ds, cfg, spark)
    assert s["constant"] == ["const"] and s["leakage"] == ["leak"] and s["drift"] == ["drift"]
    q = json.loads((tmp_path / "q" / "quality.json").read_text())
    f = q["features"]
    # reference, in plain Python
    cut = q["periods"]["test_start"]
    assert cut == 319  # the 80th percentile of t = 0..399
    noise = Counter(r["noise"] for r in rows if r["noise"] is not None)
    assert f["noise"]["cardinality"] == 5 == f["noise"]["cardinality_hll"]
    assert f["noise"]["coverage"] == pytest.approx(sum(noise.values()) / 400)
    assert [(t["value"], t["count"]) for t in f["noise"]["top_values"]] == sorted(noise.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert f["d"]["cardinality"] == 3 and f["d"]["values_lt100"] == 0 and f["d"]["values_lt10"] == 0
    train = Counter(r["drift"] for r in rows if r["t"] < cut)
    test = Counter(r["drift"] for r in rows if r["t"] >= cut)
    buckets = sorted(set(train) | set(test))
    assert f["drift"]["drift"]["psi"] == pytest.approx(psi([train[b] for b in buckets], [test[b] for b in buckets]))
    assert f["drift"]["drift"]["js"] == pytest.approx(js_divergence([train[b] for b in buckets], [test[b] for b in buckets]))
    assert f["leak"]["leakage"]["lift"] == pytest.approx(1.0) and f["leak"]["leakage"]["nmi"] == pytest.approx(1.0)
    assert f["noise"]["leakage"]["lift"] < 0.2
    assert (tmp_path / "q" / "drift.png").stat().st_size > 1000
    md = (tmp_path / "q" / "quality.md").read_text()
    assert "possible label leakage: leak" in md and "![drift.png](drift.png)" in md


def test_ctr_drift_in_c13_and_hll_close_to_exact(spark, ctr_ingested, tmp_path):
    s = quality_report({"ingest": ctr_ingested["dir"]}, tmp_path / "q", ctr_ingested["dataset"], QualityConfig(), spark)
    assert s["drift"] == ctr_ingested["truth"]["drift"] == ["C13"]
    assert s["constant"] == [] and s["leakage"] == []
    q = json.loads((tmp_path / "q" / "quality.json").read_text())["features"]
    import pyarrow.parquet as pq

    table = pq.read_table(ctr_ingested["dir"] / "data").to_pandas()
    for c in ("C1", "C3", "C13", "C26", "I5"):
        assert q[c]["cardinality"] == table[c].nunique()
        assert q[c]["coverage"] == pytest.approx(table[c].notna().mean())
        counts = table[c].value_counts()
        assert q[c]["values_once"] == int((counts == 1).sum())
    for c, rec in q.items():
        assert abs(rec["cardinality_hll"] - rec["cardinality"]) <= 0.05 * rec["cardinality"], c
    assert q["C13"]["drift"]["psi"] > 0.5 and max(r["drift"]["psi"] for c, r in q.items() if c != "C13") < 0.05


def test_hll_and_coverage_from_the_value_counts_equal_a_pass_over_the_rows(spark, ctr_ingested):
    """The per-feature non-null counts and HLL sketches built from the (feature, value) counts (values cast back
    to their column's type) are exactly what one aggregate over every row gives (the HLL of the distinct
    values hashes as the column does), for double and string columns."""
    from pyspark.sql import functions as F

    from features.quality import HLL_RSD, compute_quality, quality_features

    df = spark.read.parquet(str(ctr_ingested["dir"] / "data"))
    ds = ctr_ingested["dataset"]
    feats = quality_features(ds)
    got = compute_quality(df, feats, ds.roles.label, ds.roles.timestamp, QualityConfig())["features"]
    names = list(feats)
    row = df.agg(F.count(F.lit(1)).alias("n"), *[F.count(c).alias(f"nn{i}") for i, c in enumerate(names)],
                 *[F.approx_count_distinct(c, HLL_RSD).alias(f"h{i}") for i, c in enumerate(names)]).first()
    assert {df.schema[c].dataType.simpleString() for c in names} == {"double", "string"}
    for i, c in enumerate(names):
        assert got[c]["cardinality_hll"] == row[f"h{i}"], c
        assert got[c]["coverage"] == row[f"nn{i}"] / row["n"], c


def test_quality_jobs_do_not_grow_with_the_column_count(spark, tmp_path):
    """The report's Spark jobs are the same number for 3 and for 30 features: no per-column pass."""
    from features.quality import compute_quality

    def jobs(width: int) -> int:
        cols = ", ".join(f"CAST(id % {k + 2} AS STRING) AS c{k}" for k in range(width))
        df = spark.range(600).selectExpr("CAST(id % 2 AS INT) AS y", "id AS t", *cols.split(", "))
        sc = spark.sparkContext
        sc.setJobGroup(f"quality-{width}", "width")
        compute_quality(df, {f"c{k}": "categorical" for k in range(width)}, "y", "t", QualityConfig())
        return len(sc.statusTracker().getJobIdsForGroup(f"quality-{width}"))

    assert jobs(3) == jobs(30)


def test_drift_functions():
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert psi([50, 50], [10, 90]) == pytest.approx(0.4 * __import__("math").log(0.9 / 0.5) - 0.4 * __import__("math").log(0.1 / 0.5))
    assert js_divergence([5, 0], [0, 5]) == pytest.approx(1.0)
    assert 0 < js_divergence([3, 1], [1, 3]) < 1


def test_movielens_ratings_ingest_vocab_quality(spark, ml100k, tmp_path):
    from features.ingest import ingest
    from features.vocab import build_vocab

    path = ml100k / "u.data"
    ds = DatasetConfig(name="ml-100k", path=path, format="csv", delimiter="|", kind="ctr",
                       roles=ColumnRoles(label="rating", label_threshold=4, timestamp="timestamp", categorical=["user", "item"]))
    s = ingest({"raw": path}, tmp_path / "ingest", ds, IngestConfig(), spark)
    assert (s["rows_in"], s["rows_ok"], s["rows_quarantined"]) == (100_000, 100_000, 0)
    # reference read of the same file in Python
    ratings = Counter()
    users, items = set(), set()
    with open(path) as fh:
        next(fh)
        for line in fh:
            u, i, r, _ = line.rstrip("\n").split("|")
            ratings[int(r) >= 4] += 1
            users.add(u)
            items.add(i)
    v = build_vocab({"ingest": tmp_path / "ingest"}, tmp_path / "vocab", ds, VocabConfig(min_count=2), spark)
    schema = json.loads((tmp_path / "vocab" / "schema.json").read_text())
    assert sum(schema["rows"].values()) == 100_000
    assert 2 < v["vocab_sizes"]["user"] <= len(users) + 2 and 2 < v["vocab_sizes"]["item"] <= len(items) + 2
    assert schema["unseen"]["test"]["user"] > 0  # later users are new: the time split is real
    q = quality_report({"ingest": tmp_path / "ingest"}, tmp_path / "quality", ds, QualityConfig(), spark)
    rep = json.loads((tmp_path / "quality" / "quality.json").read_text())
    assert rep["features"]["user"]["cardinality"] == len(users) == 943
    assert rep["features"]["item"]["cardinality"] == len(items) == 1682
    assert abs(rep["features"]["item"]["cardinality_hll"] - 1682) <= 0.05 * 1682
    assert q["constant"] == [] and q["leakage"] == []
    enc = spark.read.parquet(str(tmp_path / "vocab" / "encoded" / "*"))
    assert enc.where("rating = 1").count() == ratings[True] == 55_375

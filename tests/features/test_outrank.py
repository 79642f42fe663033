"""The rank stage on Spark: planted properties of generated ctr data, equality with a numpy reference,
outputs, errors, CLI, and MovieLens 100K as a CTR table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import ColumnRoles, DatasetConfig, RankConfig
from features.discretize import bin_values
from features.errors import ConfigError, DataError
from features.estimators import ESTIMATORS
from features.mi import adjusted_mutual_information, entropy

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.spark


# ---- the numpy reference (cell by cell, exact hypergeometric probabilities) --------------------

def ref_table(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, xi = np.unique(x.astype(str), return_inverse=True)
    _, yi = np.unique(y.astype(str), return_inverse=True)
    t = np.zeros((xi.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(t, (xi, yi), 1)
    return t


def ref_mi(t: np.ndarray) -> float:
    t = np.asarray(t, dtype=float)
    n, a, b = t.sum(), t.sum(1), t.sum(0)
    nz = t > 0
    return float((t[nz] / n * np.log(n * t[nz] / np.outer(a, b)[nz])).sum())


def ref_emi(a, b) -> float:
    n = int(sum(a))
    total = 0.0
    for ai in a:
        for bj in b:
            for k in range(max(1, ai + bj - n), min(ai, bj) + 1):
                p = math.comb(int(bj), k) * math.comb(n - int(bj), int(ai) - k) / math.comb(n, int(ai))
                total += k / n * math.log(n * k / (ai * bj)) * p
    return total


def ref_score(name: str, x: np.ndarray, y: np.ndarray, background: list[np.ndarray]) -> float:
    t = ref_table(x, y)
    if name == "mi":
        return ref_mi(t)
    if name == "mi-permutation":
        return ref_mi(t) - ref_emi(t.sum(1), t.sum(0))
    return ref_mi(t) - float(np.mean([ref_mi(ref_table(x, b)) for b in background]))


# ---- data ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctr50k(tmp_path_factory) -> dict:
    """50k generated ctr rows: enough for every planted property to hold with a margin."""
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("ctr50k")
    truth = generate("ctr", rows=50_000, seed=0, output=out)
    return {"path": out / truth["file"], "truth": truth}


@pytest.fixture(scope="module")
def ranked(spark, ctr50k, tmp_path_factory) -> dict:
    """The 50k rows ranked from the raw file (config-free form: roles inferred, ts excluded)."""
    from features.outrank import rank

    out = tmp_path_factory.mktemp("rank50k")
    ds = DatasetConfig(path=ctr50k["path"], format="tsv", kind="ctr", roles=ColumnRoles(label="label"))
    summary = rank({"raw": ctr50k["path"]}, out, ds, RankConfig(pairs_top_k=6), spark, exclude=["ts"])
    ranking = pd.read_csv(out / "ranking.tsv", sep="\t")
    return {"out": out, "summary": summary, "path": ctr50k["path"], "ranking": ranking.set_index("feature"),
            "order": list(ranking["feature"]), "truth": ctr50k["truth"],
            "pairs": pd.read_csv(out / "pairs.tsv", sep="\t"), "selection": pd.read_csv(out / "selection.tsv", sep="\t")}


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    """3,000 generated rows, a few columns of every kind (low/high cardinality, missing, dense), as CSV."""
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("small")
    truth = generate("ctr", rows=3_000, seed=5, output=out)
    df = pd.read_csv(out / truth["file"], sep="\t", dtype=str, keep_default_na=False)
    path = out / "small.csv"
    df[["label", "C1", "C2", "C7", "C8", "C12", "C23", "I1", "I5"]].to_csv(path, index=False)
    return path


def _informative_and_noise(truth: dict) -> tuple[list[str], list[str]]:
    informative = truth["informative"] + [c for c, r in truth["numeric_roles"].items() if r == "informative"]
    noise = truth["noise"] + [c for c, r in truth["numeric_roles"].items() if r == "noise"]
    return informative, noise


# ---- planted properties --------------------------------------------------------------------------

def test_informative_features_rank_above_every_noise_feature(ranked):
    informative, noise = _informative_and_noise(ranked["truth"])
    pos = {f: i for i, f in enumerate(ranked["order"])}
    assert "C3" in informative and ranked["truth"]["columns"]["C3"]["cardinality"] == 200_000
    assert max(pos[f] for f in informative) < min(pos[f] for f in noise), ranked["order"]
    score = ranked["ranking"]["score"]
    assert score[informative].min() > score[noise].max() + 0.001


def test_noise_scores_sit_in_a_small_band_around_zero_at_every_cardinality(ranked):
    r = ranked["ranking"]
    _, noise = _informative_and_noise(ranked["truth"])
    assert r.loc[noise, "score"].abs().max() < 0.004, r.loc[noise, ["cardinality", "score"]]
    assert r.loc[noise, "cardinality"].min() <= 3 and r.loc[noise, "cardinality"].max() > 20_000
    # what the correction removed: plain MI of the 1e6-value noise features is larger than any real signal
    assert r.loc["C26", "mi"] > 0.2 and r.loc["C23", "mi"] > r.loc["C1", "mi"]


def test_xor_pair_is_found_by_pair_relevance(ranked):
    pairs, r = ranked["pairs"], ranked["ranking"]
    top = pairs.iloc[0]
    assert {top["feature_a"], top["feature_b"]} == {"C7", "C8"}
    assert abs(r.loc["C7", "score"]) < 0.001 and abs(r.loc["C8", "score"]) < 0.001
    assert top["gain"] > 0.03 and top["gain"] > 10 * pairs.iloc[1]["gain"]
    sel = list(ranked["selection"]["feature"])
    assert sel.index("C7") < 8 and sel.index("C8") < 8


def test_redundant_copy_is_pushed_down_by_3mr(ranked):
    pairs, sel = ranked["pairs"], ranked["selection"]
    informative, _ = _informative_and_noise(ranked["truth"])
    copy_pair = pairs[((pairs.feature_a == "C9") & (pairs.feature_b == "C1")) | ((pairs.feature_a == "C1") & (pairs.feature_b == "C9"))]
    assert copy_pair["redundancy"].iloc[0] > 0.8
    order = list(sel["feature"])
    others = [f for f in informative if f != "C9"]
    assert order.index("C9") > max(order.index(f) for f in others)
    assert order.index("C9") > ranked["order"].index("C9")


def test_outputs_follow_the_stage_contract(ranked):
    out, summary = ranked["out"], ranked["summary"]
    assert (out / "ranking.tsv").read_text().splitlines()[0] == "feature\tcardinality\tcoverage\tmi\tscore\trank"
    assert list(ranked["ranking"]["rank"]) == list(range(1, len(ranked["order"]) + 1))
    assert ranked["ranking"]["score"].is_monotonic_decreasing
    spec = json.loads((out / "feature_spec.json").read_text())
    recs = {r["name"]: r for r in spec["features"]}
    assert len(recs) == 39 and "ts" not in recs and "label" not in recs
    keys = {"name", "role", "cardinality", "cardinality_method", "coverage", "vocab_size", "mi", "score",
            "noise_corrected", "selected"}
    assert all(keys <= set(r) for r in recs.values())
    raw = pd.read_csv(ranked["path"], sep="\t", dtype=str, keep_default_na=False, usecols=["C1", "C12", "C26"])
    assert recs["C1"]["cardinality"] == raw["C1"].nunique() == 8
    assert recs["C26"]["cardinality"] == raw["C26"][raw["C26"] != ""].nunique()
    assert recs["C12"]["coverage"] == pytest.approx((raw["C12"] != "").mean(), abs=1e-12)
    assert recs["C1"]["vocab_size"] == 10 and recs["C1"]["cardinality_method"] == "exact"
    assert recs["I1"]["role"] == "dense" and recs["C1"]["role"] == "categorical" and "bin_splits" in recs["I1"]
    assert all(r["noise_corrected"] for r in recs.values())
    assert recs["C1"]["selected"] and recs["C3"]["selected"] and not recs["C26"]["selected"]
    assert summary["rows_in"] == summary["rows_out"] == 50_000 and summary["rows_malformed"] == 0
    png = (out / "top_features.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


# ---- Spark equals the numpy reference, for every estimator --------------------------------------

def test_spark_scores_equal_the_numpy_reference_for_every_estimator(spark, small_csv):
    """One Spark run (mi-shifted, so its count tables also hold the random label copies); every
    estimator's score of those Spark-made count tables must equal the cell-by-cell reference."""
    from features.outrank import _profile, background_sql, score_features
    from features.rank_source import read_raw

    # pairs: the top feature and every low-cardinality categorical (the reference EMI is slow for two large ones)
    cfg = RankConfig(heuristic="mi-shifted", permutations=3, seed=11, bins=8, pairs_top_k=1, pair_buckets=2**62)
    res = score_features(spark, read_raw(spark, small_csv, "label", "csv"), cfg)
    df = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    y = df["label"].to_numpy()
    counts = np.array([(y == c).sum() for c in res.classes])
    rows, _, _ = _profile(read_raw(spark, small_csv, "label", "csv"))   # the rows the label copies were drawn for
    bg = rows.selectExpr(*background_sql(counts, cfg.seed, cfg.permutations)).toPandas()
    background = [bg[c].to_numpy() for c in bg.columns]
    values = {}
    for f in res.features:
        col = df[f.name].to_numpy()
        if f.role == "dense":
            x = np.array([float(v) if v != "" else np.nan for v in col])
            col = np.array(["<missing>" if v is None else v for v in bin_values(x, f.splits)], dtype=object)
        else:
            col = np.where(col == "", "<missing>", col)
        values[f.name] = col
        assert f.mi == pytest.approx(ref_mi(ref_table(col, y)), abs=1e-9), f.name
        for name, est in ESTIMATORS.items():
            expected = ref_score(name, col, y, background)
            assert est.score(f.counts.stats) == pytest.approx(expected, abs=1e-9), (name, f.name)
        assert f.score == pytest.approx(ref_score("mi-shifted", col, y, background), abs=1e-9)
        assert f.coverage == pytest.approx((col != "<missing>").mean(), abs=1e-12)
        assert f.cardinality == len(set(col) - {"<missing>"})
    assert {f.role for f in res.features} == {"categorical", "dense"}
    assert res.rows == len(df) and len(res.pairs) >= 6
    for p in res.pairs:
        a, b = values[p.a], values[p.b]
        joint = np.array([f"{u}\x01{v}" for u, v in zip(a, b)], dtype=object)
        assert p.mi == pytest.approx(ref_mi(ref_table(joint, y)), abs=1e-9), (p.a, p.b)
        assert p.score == pytest.approx(ref_score("mi-shifted", joint, y, background), abs=1e-9), (p.a, p.b)
        t_ab = ref_table(a, b)
        fmi = ref_mi(t_ab)
        ami = adjusted_mutual_information(fmi, ref_emi(t_ab.sum(1), t_ab.sum(0)), entropy(t_ab.sum(1)), entropy(t_ab.sum(0)))
        assert p.feature_mi == pytest.approx(fmi, abs=1e-9) and p.redundancy == pytest.approx(ami, abs=1e-9)


def test_mi_permutation_pair_scores_equal_the_reference(spark, small_csv):
    """The pair pass with the default estimator: pair score = MI - E[MI] of the joint values."""
    from features.outrank import score_features
    from features.rank_source import read_raw

    cfg = RankConfig(bins=8, pairs_top_k=1, pair_buckets=2**62)
    res = score_features(spark, read_raw(spark, small_csv, "label", "csv", categorical=["C1", "C7", "C8", "C12"], dense=[]), cfg)
    df = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    y = df["label"].to_numpy()
    by = {f.name: f for f in res.features}
    assert len(res.pairs) == 6
    for p in res.pairs:
        a, b = (np.where(df[c].to_numpy() == "", "<missing>", df[c].to_numpy()) for c in (p.a, p.b))
        joint = np.array([f"{u}\x01{v}" for u, v in zip(a, b)], dtype=object)
        assert p.score == pytest.approx(ref_score("mi-permutation", joint, y, []), abs=1e-9)
        assert p.gain == pytest.approx(p.score - by[p.a].score - by[p.b].score, abs=1e-12)


# ---- the pair pass: one aggregation for every pair, sampled on large data ---------------------------

def _same_counts(x, y) -> None:
    assert x.cardinality == y.cardinality and x.missing_rows == y.missing_rows
    np.testing.assert_array_equal(x.stats.value_counts, y.stats.value_counts)
    np.testing.assert_array_equal(x.stats.multiplicity, y.stats.multiplicity)
    assert x.stats.joint_xlogx == y.stats.joint_xlogx


def test_one_aggregation_counts_every_pair_as_the_per_pair_method_does(spark):
    """All pairs in one explode + one group-by give the same count tables (hence scores) as one
    aggregation per pair, and the Spark jobs it runs do not grow with the number of pairs."""
    from itertools import combinations

    from features.count_tables import group_count_stats
    from features.outrank import pair_long_df, value_key_sql

    rng = np.random.default_rng(3)
    n = 1_500
    y = rng.integers(0, 2, n)
    cols = {"a": rng.choice(list("abc"), n), "b": np.where(rng.random(n) < 0.2, None, rng.choice(list("wxyz"), n)),
            "c": rng.integers(0, 60, n).astype(str), "d": np.where(y == 1, "p", rng.choice(["p", "q"], n)),
            "e": rng.integers(0, 5, n).astype(str)}
    pdf = pd.DataFrame({"y": y.astype("int32"), **cols})
    prepared = spark.createDataFrame(pdf.astype(object).where(pdf.notna(), None), "y int, a string, b string, c string, d string, e string") \
        .selectExpr("y AS _y", *[f"{value_key_sql(c)} AS _v{i}" for i, c in enumerate(cols)])
    keys = {c: f"_v{i}" for i, c in enumerate(cols)}
    combos = list(combinations(cols, 2))
    counts = np.array([(y == 0).sum(), (y == 1).sum()])
    sc = spark.sparkContext
    sc.setJobGroup("pairs-all", "every pair at once")
    together = group_count_stats(pair_long_df(prepared, keys, combos, [], 2**62, 0), 2, 0, counts)
    sc.setJobGroup("pairs-one", "one pair")
    group_count_stats(pair_long_df(prepared, keys, combos[:1], [], 2**62, 0), 2, 0, counts)
    sc.setJobGroup("pairs-rest", "per pair")
    per_pair = [group_count_stats(pair_long_df(prepared, keys, [c], [], 2**62, 0), 2, 0, counts)[0] for c in combos]
    tracker = sc.statusTracker()
    jobs_all, jobs_one = (len(tracker.getJobIdsForGroup(g)) for g in ("pairs-all", "pairs-one"))
    assert jobs_all == jobs_one >= 1 and len(tracker.getJobIdsForGroup("pairs-rest")) == len(combos) * jobs_one
    assert len(together) == len(combos) == 10
    for j, (a, b) in enumerate(combos):
        _same_counts(together[j], per_pair[j])
        # and both equal the pair's own table
        joint = np.array([f"{u}\x01{v}" for u, v in zip(pdf[a].fillna("<missing>"), pdf[b].fillna("<missing>"))], dtype=object)
        assert together[j].stats.mi() == pytest.approx(ref_mi(ref_table(joint, y)), abs=1e-12), (a, b)
    # the members counted in the same explode equal their own aggregation
    with_members = group_count_stats(pair_long_df(prepared, keys, combos, list(cols), 2**62, 0), 2, 0, None)
    for i, c in enumerate(cols):
        alone = group_count_stats(prepared.selectExpr("_y", f"0 AS g", f"{keys[c]} AS v"), 2, 0, counts)[0]
        _same_counts(with_members[len(combos) + i], alone)
    np.testing.assert_array_equal(with_members[0].stats.class_counts, counts)
    # one explode (Generate) and one per-value aggregation in the physical plan
    plan = pair_long_df(prepared, keys, combos, [], 2**62, 0).groupBy("g", "v").count()
    text = plan._jdf.queryExecution().executedPlan().toString()
    assert text.count("Generate ") == 1 and text.count("Exchange hashpartitioning") == 1, text


def test_pair_scores_match_the_per_pair_scores_in_exact_mode(spark, small_csv):
    """score_features' pairs (one pass, members' counts reused) equal scores built pair by pair."""
    from features.count_tables import group_count_stats
    from features.estimators import get_estimator
    from features.outrank import pair_long_df, score_features, value_key_sql
    from features.rank_source import read_raw

    feats = ["C1", "C7", "C8", "C12"]
    cfg = RankConfig(bins=8, pairs_top_k=1, pair_buckets=2**62, pair_sample_rows=None)
    res = score_features(spark, read_raw(spark, small_csv, "label", "csv", categorical=feats, dense=[]), cfg)
    assert res.pair_rows == res.rows == 3_000 and len(res.pairs) == 6
    df = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    sdf = spark.createDataFrame(df[["label", *feats]].replace("", None))
    prepared = sdf.selectExpr("CAST(label AS INT) AS _y", *[f"{value_key_sql(q)} AS _v{i}" for i, q in enumerate(feats)])
    keys = {c: f"_v{i}" for i, c in enumerate(feats)}
    counts = res.features[0].counts.stats.class_counts
    est = get_estimator(cfg.heuristic)
    single = {f.name: f.score for f in res.features}
    for p in res.pairs:
        gc = group_count_stats(pair_long_df(prepared, keys, [(p.a, p.b)], [], 2**62, 0), 2, 0, counts)[0]
        assert p.score == pytest.approx(est.score(gc.stats), abs=1e-12) and p.cardinality == gc.cardinality
        assert p.gain == pytest.approx(est.score(gc.stats) - single[p.a] - single[p.b], abs=1e-12)


def test_pair_sample_fraction():
    from features.outrank import pair_sample_fraction

    assert pair_sample_fraction(1_000_000, RankConfig()) == 1.0
    assert pair_sample_fraction(8_000_000, RankConfig()) == 0.125
    assert pair_sample_fraction(8_000_000, RankConfig(pair_sample_rows=None)) == 1.0


def test_pairs_that_outnumber_the_features_are_counted_on_a_sample_no_larger_than_the_feature_pass():
    """#14: the pair table (pairs + members) x rows is held to the feature pass's features x rows,
    within [pair_min_rows, pair_sample_rows]; all rows when the pairs are fewer than the features."""
    from features.outrank import pair_sample_fraction

    cfg = RankConfig()
    assert (cfg.pair_sample_rows, cfg.pair_min_rows) == (1_000_000, 50_000)
    assert pair_sample_fraction(200_000, cfg, features=39, groups=136) == math.ceil(200_000 * 39 / 136) / 200_000
    assert pair_sample_fraction(200_000, cfg, features=39, groups=30) == 1.0          # fewer pairs than features
    assert pair_sample_fraction(60_000, cfg, features=10, groups=100) == 50_000 / 60_000   # the floor
    assert pair_sample_fraction(40_000, cfg, features=10, groups=100) == 1.0          # under the floor: exact
    assert pair_sample_fraction(8_000_000, cfg, features=39, groups=20) == 0.125      # the cap
    assert pair_sample_fraction(8_000_000, RankConfig(pair_sample_rows=None), features=39, groups=136) == 1.0


def test_pairs_counted_on_the_feature_pass_sized_sample_keep_the_planted_pairs(spark, ranked, tmp_path):
    """The 50k rows with the floor lowered: the pairs (and their members) of the top 6 + the
    low-cardinality features are counted on rows x 39 / (pairs + members) rows; the single ranking
    is unchanged, the XOR pair still on top, the redundant copy still found."""
    from features.outrank import rank

    ds = DatasetConfig(path=ranked["path"], format="tsv", kind="ctr", roles=ColumnRoles(label="label"))
    summary = rank({"raw": ranked["path"]}, tmp_path, ds, RankConfig(pairs_top_k=6, pair_min_rows=5_000),
                   spark, exclude=["ts"])
    pairs = pd.read_csv(tmp_path / "pairs.tsv", sep="\t")
    members = len(set(pairs["feature_a"]) | set(pairs["feature_b"]))
    expected = 50_000 * 39 / (len(pairs) + members)
    assert len(pairs) + members > 39 and abs(summary["pair_rows"] - expected) < 5 * math.sqrt(expected)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ranking.tsv", sep="\t").set_index("feature"), ranked["ranking"])
    top = pairs.iloc[0]
    assert {top["feature_a"], top["feature_b"]} == {"C7", "C8"} and top["gain"] > 0.03
    copy = pairs[[{a, b} == {"C1", "C9"} for a, b in zip(pairs["feature_a"], pairs["feature_b"])]]
    assert copy["redundancy"].iloc[0] > 0.8


def test_sampled_pair_pass_keeps_the_planted_pairs(spark, ranked, tmp_path):
    """Pairs counted on a seeded ~20k-row sample of the 50k rows: same single ranking, the XOR pair
    on top with a gain within sampling error of the exact one, the redundant copy still found."""
    from features.outrank import rank

    ds = DatasetConfig(path=ranked["path"], format="tsv", kind="ctr", roles=ColumnRoles(label="label"))
    summary = rank({"raw": ranked["path"]}, tmp_path, ds, RankConfig(pairs_top_k=6, pair_sample_rows=20_000),
                   spark, exclude=["ts"])
    assert abs(summary["pair_rows"] - 20_000) < 5 * math.sqrt(20_000 * 0.6) and ranked["summary"]["pair_rows"] == 50_000
    ranking = pd.read_csv(tmp_path / "ranking.tsv", sep="\t").set_index("feature")
    pd.testing.assert_frame_equal(ranking, ranked["ranking"])
    pairs = pd.read_csv(tmp_path / "pairs.tsv", sep="\t")
    exact = ranked["pairs"].set_index(["feature_a", "feature_b"])
    top = pairs.iloc[0]
    assert {top["feature_a"], top["feature_b"]} == {"C7", "C8"} and top["gain"] > 0.03
    assert top["gain"] == pytest.approx(exact.loc[(top["feature_a"], top["feature_b"]), "gain"], abs=0.01)
    assert set(map(tuple, pairs[["feature_a", "feature_b"]].to_numpy())) == set(exact.index)
    same = pairs.set_index(["feature_a", "feature_b"]).loc[exact.index]
    assert (same["redundancy"] - exact["redundancy"]).abs().max() < 0.05
    copy = same.loc[[i for i in same.index if set(i) == {"C1", "C9"}], "redundancy"]
    assert copy.iloc[0] > 0.8


# ---- inputs: ingest output, malformed rows, errors ----------------------------------------------

def test_rank_reads_the_ingest_output_with_config_roles(spark, ctr_ingested, tmp_path):
    from features.outrank import rank

    cfg = RankConfig(pairs_top_k=0)
    summary = rank({"ingest": ctr_ingested["dir"]}, tmp_path, ctr_ingested["dataset"], cfg, spark,
                   vocab_sizes={"C1": 9})
    spec = {r["name"]: r for r in json.loads((tmp_path / "feature_spec.json").read_text())["features"]}
    truth = ctr_ingested["truth"]
    assert set(spec) == set(truth["dense"]) | set(truth["categorical"])
    assert summary["rows_out"] == ctr_ingested["summary"]["rows_ok"]
    assert spec["C1"]["vocab_size"] == 9 and spec["C1"]["vocab_size_source"] == "vocab"
    assert spec["C2"]["vocab_size"] == spec["C2"]["cardinality"] + 2
    assert spec["I1"]["role"] == "dense"
    assert summary["top"].index("C1") < 6


def test_malformed_raw_rows_are_counted_not_dropped_silently(spark, tmp_path):
    from features.outrank import rank

    path = tmp_path / "t.csv"
    path.write_text("label,a,b\n1,x,1\n0,y,2\n1,x,3,EXTRA\n0,y,4\n1,x,5\n,y,6\n")
    ds = DatasetConfig(path=path, format="csv", kind="ctr", roles=ColumnRoles(label="label"))
    s = rank({"raw": path}, tmp_path / "out", ds, RankConfig(pairs_top_k=0), spark)
    assert (s["rows_in"], s["rows_malformed"], s["rows_without_label"], s["rows_out"]) == (6, 1, 1, 4)
    spec = {r["name"]: r for r in json.loads((tmp_path / "out" / "feature_spec.json").read_text())["features"]}
    assert spec["a"]["role"] == "categorical" and spec["b"]["role"] == "dense"
    assert spec["a"]["mi"] == pytest.approx(math.log(2), abs=1e-12)


def test_quoted_fields_are_read_by_the_csv_parser_and_a_repeated_header_is_malformed(spark, tmp_path):
    """Quote-free files are split line by line; one quote anywhere sends the file to the CSV reader."""
    from features.outrank import rank
    from features.rank_source import has_quote, read_raw

    quoted, plain = tmp_path / "quoted.csv", tmp_path / "plain.csv"
    quoted.write_text('label,a,b\n1,"x,y",1\n0,z,2\n1,"x,y",3\n0,z,4\n')
    plain.write_text("label,a,b\n1,x,1\n0,z,2\nlabel,a,b\n1,x,3\n0,z,4\n")
    assert has_quote(quoted) and not has_quote(plain)
    assert read_raw(spark, quoted, "label").header_rows == 0 and read_raw(spark, plain, "label").header_rows == 1
    summaries = {}
    for path in (quoted, plain):
        ds = DatasetConfig(path=path, format="csv", kind="ctr", roles=ColumnRoles(label="label"))
        summaries[path.stem] = rank({"raw": path}, tmp_path / path.stem, ds, RankConfig(pairs_top_k=0), spark)
        spec = {r["name"]: r for r in json.loads((tmp_path / path.stem / "feature_spec.json").read_text())["features"]}
        assert spec["a"]["cardinality"] == 2 and spec["a"]["mi"] == pytest.approx(math.log(2), abs=1e-12)
    assert (summaries["quoted"]["rows_in"], summaries["quoted"]["rows_malformed"], summaries["quoted"]["rows_out"]) == (4, 0, 4)
    assert (summaries["plain"]["rows_in"], summaries["plain"]["rows_malformed"], summaries["plain"]["rows_out"]) == (5, 1, 4)


@pytest.mark.parametrize("content,expected", [
    ("", "the file is empty"),
    ("label,a\n", "has no data rows"),
    ("y,a\n1,x\n0,y\n", "label column 'label' is not in the header"),
    ("label,a\n1,x\n1,y\n1,z\n", "label 'label' has a single class ('1' in all 3 rows)"),
])
def test_bad_inputs_give_one_line_errors(spark, tmp_path, content, expected):
    from features.outrank import rank

    path = tmp_path / "bad.csv"
    path.write_text(content)
    ds = DatasetConfig(path=path, format="csv", kind="ctr", roles=ColumnRoles(label="label"))
    with pytest.raises(DataError) as err:
        rank({"raw": path}, tmp_path / "out", ds, RankConfig(), spark)
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_unknown_heuristic_in_a_config_is_a_one_line_error():
    from jobs.config import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"dataset": {"path": "x.tsv", "kind": "ctr", "roles": {"label": "label"}},
                      "features": {"rank": {"heuristic": "MI-numba-randomized"}}}, "run.yaml", check_paths=False)
    assert "features.rank.heuristic" in str(err.value) and "mi-permutation" in str(err.value)


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_ranks_a_raw_file_without_a_config(spark, small_csv, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    res = CliRunner().invoke(app, ["features", "rank", "--input", str(small_csv), "--label", "label",
                                   "--output", str(tmp_path / "o"), "--pairs-top-k", "0", "--heuristic", "mi"])
    assert res.exit_code == 0, res.output
    assert "ranked 8 features on 3,000 rows" in res.output
    ranking = pd.read_csv(tmp_path / "o" / "ranking.tsv", sep="\t")
    assert (ranking["mi"] == ranking["score"]).all() and len(ranking) == 8


def test_cli_error_is_one_line_without_traceback(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "features", "rank", "--input", str(empty),
                           "--label", "y", "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "the file is empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- MovieLens 100K as a CTR table -------------------------------------------------------------

def ml100k_ctr(folder: Path) -> pd.DataFrame:
    """u.data joined with u.user and u.item; label rating >= 4; user/item attributes as categoricals."""
    data = pd.read_csv(folder / "u.data", sep="|")
    users = pd.read_csv(folder / "u.user", sep="|", dtype={"zip": str})
    items = pd.read_csv(folder / "u.item", sep="|", encoding="latin-1")
    genres = list(items.columns[5:])
    items["genres"] = items[genres].apply(lambda r: "|".join(g for g, v in zip(genres, r) if v == 1), axis=1)
    items["release_year"] = pd.to_datetime(items["releaseDate"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64").astype(str)
    df = data.merge(users, on="user").merge(items[["item", "genres", "release_year"]], on="item")
    return pd.DataFrame({
        "label": (df["rating"] >= 4).astype(int),
        "user_id": "u" + df["user"].astype(str), "item_id": "i" + df["item"].astype(str),
        "age_bucket": pd.cut(df["age"], [0, 17, 24, 34, 44, 49, 55, 200]).astype(str),
        "gender": df["gender"], "occupation": df["occupation"], "zip_prefix": df["zip"].str[:2],
        "genres": df["genres"], "release_year": df["release_year"].replace("<NA>", ""),
    })


def test_ml100k_ranking(spark, ml100k, tmp_path):
    from features.outrank import rank

    table = ml100k_ctr(ml100k)
    path = tmp_path / "ml100k_ctr.tsv"
    table.to_csv(path, sep="\t", index=False)
    feats = [c for c in table.columns if c != "label"]
    ds = DatasetConfig(path=path, format="tsv", kind="ctr", roles=ColumnRoles(label="label", categorical=feats))
    summary = rank({"raw": path}, tmp_path / "out", ds, RankConfig(pairs_top_k=4), spark)
    r = pd.read_csv(tmp_path / "out" / "ranking.tsv", sep="\t").set_index("feature")
    print("ml-100k ranking:\n" + r.to_string())
    assert summary["rows_out"] == 100_000
    assert r.loc["item_id", "cardinality"] == 1682 and r.loc["user_id", "cardinality"] == 943
    assert list(r.index[:2]) == ["item_id", "user_id"]
    # the ids carry real signal after the correction; part of their plain MI was chance
    assert r.loc["item_id", "score"] > 0.05 and r.loc["item_id", "mi"] - r.loc["item_id", "score"] > 0.005
    assert list(r.index[2:4]) == ["genres", "release_year"]
    assert abs(r.loc["gender", "score"]) < 0.001 and r.loc["gender", "score"] < r.loc["age_bucket", "score"]

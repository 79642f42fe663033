"""The generators are deterministic per seed and their planted properties hold."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from features.errors import UserError
from features.synthetic import generate


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ctr(ctr_small):
    lines = ctr_small["path"].read_text().split("\n")
    bad = {b["data_line"] for b in ctr_small["truth"]["bad_rows"]}
    good = [ln for i, ln in enumerate(lines[1:-1], start=1) if i not in bad]
    from io import StringIO

    df = pd.read_csv(StringIO("\n".join([lines[0], *good])), sep="\t", dtype={f"C{i}": str for i in range(1, 27)})
    return df, ctr_small["truth"]


def _chi2_p(df: pd.DataFrame, col) -> float:
    table = pd.crosstab(df[col], df["label"])
    return chi2_contingency(table.to_numpy())[1]


@pytest.mark.parametrize("kind", ["ctr", "sessions", "interactions"])
def test_same_seed_same_bytes(tmp_path, kind):
    a = generate(kind, rows=3000, seed=11, output=tmp_path / "a", gzip=True)
    b = generate(kind, rows=3000, seed=11, output=tmp_path / "b", gzip=True)
    c = generate(kind, rows=3000, seed=12, output=tmp_path / "c", gzip=True)
    assert _sha(tmp_path / "a" / a["file"]) == _sha(tmp_path / "b" / b["file"])
    assert _sha(tmp_path / "a" / a["file"]) != _sha(tmp_path / "c" / c["file"])
    assert (tmp_path / "a" / "truth.json").read_text() == (tmp_path / "b" / "truth.json").read_text()
    with gzip.open(tmp_path / "a" / a["file"], "rt") as fh:
        assert fh.readline().strip()


def test_generate_rejects_unknown_kind_and_tiny_sizes(tmp_path):
    with pytest.raises(UserError, match="unknown dataset kind 'ctrr'"):
        generate("ctrr", rows=1000, seed=0, output=tmp_path)
    with pytest.raises(UserError, match="too small"):
        generate("ctr", rows=10, seed=0, output=tmp_path)


def test_ctr_shape_and_columns(ctr):
    df, truth = ctr
    assert len(df) == 20_000
    assert list(df.columns) == ["label", "ts"] + truth["dense"] + truth["categorical"]
    assert len(truth["dense"]) == 13 and len(truth["categorical"]) == 26
    assert 0.2 < df["label"].mean() < 0.3
    assert df["ts"].is_monotonic_increasing


def test_ctr_measured_cardinalities(ctr):
    df, truth = ctr
    cols = truth["columns"]
    for name in ("C1", "C4", "C7", "C8", "C12", "C13", "C14"):
        assert df[name].nunique() == cols[name]["cardinality"], name
    for name in ("C3", "C6", "C23", "C26"):
        assert 1_000 < df[name].nunique() <= min(cols[name]["cardinality"], len(df)), name
    cards = sorted(c["cardinality"] for c in cols.values())
    assert cards[0] == 3 and cards[-1] == 1_000_000


def test_ctr_frequencies_are_zipf_skewed(ctr):
    df, _ = ctr
    shares = df["C2"].value_counts(normalize=True)
    assert shares.iloc[0] > 0.05 and shares.iloc[0] > 20 * shares.median()


def test_ctr_missing_values_are_planted(ctr):
    df, truth = ctr
    assert df["C1"].isna().sum() == 0
    assert abs(df["C25"].isna().mean() - truth["columns"]["C25"]["missing"]) < 0.02
    assert 0.15 < df["I4"].isna().mean() < 0.25 and df["I1"].notna().all()


def test_ctr_informative_features_change_the_label_rate(ctr):
    df, truth = ctr
    for name in ("C1", "C2", "C11"):
        assert _chi2_p(df, name) < 1e-6, name
    rates = df.groupby("C1")["label"].mean()
    assert rates.max() - rates.min() > 0.15
    for name in ("C4", "C14", "C12"):
        assert _chi2_p(df, name) > 1e-3, name
    hi = df["I1"] > df["I1"].median()
    assert df.loc[hi, "label"].mean() - df.loc[~hi, "label"].mean() > 0.05


def test_ctr_xor_pair_is_informative_only_jointly(ctr):
    df, truth = ctr
    a, b = truth["xor_pair"]
    assert _chi2_p(df, a) > 1e-3 and _chi2_p(df, b) > 1e-3
    pair = df[a] + "|" + df[b]
    rates = df.groupby(pair)["label"].mean()
    assert rates.max() - rates.min() > 0.3


def test_ctr_redundant_feature_nearly_copies_its_source(ctr):
    df, truth = ctr
    (copy, source), = truth["redundant"].items()
    mapping = df.groupby(source)[copy].agg(lambda s: s.value_counts().index[0])
    agree = (df[source].map(mapping) == df[copy]).mean()
    assert 0.95 < agree < 1.0


def test_ctr_drift_feature_shifts_late(ctr):
    df, truth = ctr
    name = truth["drift"][0]
    late = df["ts"] >= df["ts"].min() + 5 * 86_400
    early_top = df.loc[~late, name].value_counts(normalize=True)
    late_top = df.loc[late, name].value_counts(normalize=True)
    assert early_top.index[0] != late_top.index[0]


def test_ctr_bad_rows_are_at_the_recorded_lines(ctr_small):
    lines = ctr_small["path"].read_text().split("\n")
    bad = ctr_small["truth"]["bad_rows"]
    assert len(bad) == 9
    for b in bad:
        line = lines[b["data_line"]]
        if b["kind"] == "empty_line":
            assert line == ""
        elif b["kind"] == "wrong_column_count":
            assert len(line.split("\t")) != 41
        else:
            assert "abc" in line.split("\t")


def test_sessions_cold_items_absent_before_cold_period(sessions_small):
    truth = sessions_small["truth"]
    s = pd.read_csv(sessions_small["path"])
    items = pd.read_csv(sessions_small["items"])
    cold = set(truth["cold_items"])
    assert len(cold) > 0.05 * truth["n_items"]
    is_cold = s["item_id"].isin(cold)
    assert (s.loc[is_cold, "timestamp"] >= truth["cold_start_time"]).all()
    assert is_cold.sum() > 50
    assert set(s["item_id"]) <= set(items["item_id"])
    assert {"category", "subcategory", "brand", "price_bucket", "tokens"} <= set(items.columns)


def test_sessions_are_category_coherent(sessions_small):
    s = pd.read_csv(sessions_small["path"]).sort_values(["session_id", "timestamp"], kind="stable")
    items = pd.read_csv(sessions_small["items"]).set_index("item_id")
    s["category"] = s["item_id"].map(items["category"])
    same = (s["category"] == s.groupby("session_id")["category"].shift()).loc[s["session_id"].duplicated()]
    assert same.mean() > 0.7
    pop = s["item_id"].value_counts(normalize=True)
    assert pop.iloc[:10].sum() > 5 * 10 / len(items)  # 5x a uniform catalogue


def test_interactions_have_power_law_degrees(tmp_path):
    truth = generate("interactions", rows=20_000, seed=5, output=tmp_path)
    df = pd.read_csv(tmp_path / truth["file"])
    deg = df["user_id"].value_counts().to_numpy()
    top = deg[: max(1, len(deg) // 100)].sum() / deg.sum()
    assert top > 0.1
    ranks = np.arange(1, 51)
    slope = np.polyfit(np.log(ranks), np.log(np.sort(df["item_id"].value_counts().to_numpy())[::-1][:50]), 1)[0]
    assert -1.5 < slope < -0.7
    assert df["timestamp"].is_monotonic_increasing

"""Windowed per-user / per-item aggregates: equal to a brute-force reference, strictly before each event."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.aggregates import DAY, aggregate_columns, aggregates, with_aggregate_roles
from features.config import ColumnRoles, DatasetConfig
from features.errors import DataError

T0 = 1_700_000_000


def _dataset(**roles) -> DatasetConfig:
    base = dict(label="label", timestamp="ts", dense=["I1"], categorical=["C1", "C10", "C11"], user_id="C10", item_id="C11")
    base.update(roles)
    return DatasetConfig(path="/nonexistent", kind="ctr", roles=ColumnRoles(**base))


def _events(n: int = 240, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # times on a coarse grid (ties on purpose) over 10 days; 6 users, 4 items, some missing keys
    ts = T0 + rng.integers(0, 10 * 24, size=n) * 3600
    users = np.array([f"u{i}" for i in rng.integers(0, 6, size=n)], dtype=object)
    users[rng.random(n) < 0.05] = None
    items = np.array([f"i{i}" for i in rng.integers(0, 4, size=n)], dtype=object)
    return pd.DataFrame({"label": rng.integers(0, 2, size=n).astype("int32"), "ts": ts.astype("int64"),
                         "I1": rng.random(n), "C1": rng.choice(["a", "b"], size=n), "C10": users, "C11": items})


def _reference(df: pd.DataFrame, key: str, prefix: str, windows: list[int]) -> pd.DataFrame:
    """For each row: counts / clicks / ctr of the same key's rows with ts in [t - W, t - 1]."""
    out = {}
    for w in windows:
        ev, cl, ctr = [], [], []
        for k, t in zip(df[key], df["ts"]):
            if k is None:
                ev.append(np.nan), cl.append(np.nan), ctr.append(np.nan)
                continue
            m = (df[key] == k) & (df["ts"] >= t - w * DAY) & (df["ts"] <= t - 1)
            n, c = int(m.sum()), int(df.loc[m, "label"].sum())
            ev.append(n), cl.append(c), ctr.append(c / n if n else np.nan)
        out[f"{prefix}_events_{w}d"], out[f"{prefix}_clicks_{w}d"], out[f"{prefix}_ctr_{w}d"] = ev, cl, ctr
    return pd.DataFrame(out)


def _write_ingest(spark, df: pd.DataFrame, folder) -> None:
    schema = "label int, ts long, I1 double, C1 string, C10 string, C11 string"
    spark.createDataFrame(df.astype(object).where(df.notna(), None), schema).write.parquet(str(folder / "data"))


@pytest.mark.spark
def test_aggregates_equal_brute_force_reference_and_never_see_the_event(spark, tmp_path):
    df = _events()
    _write_ingest(spark, df, tmp_path / "ingest")
    ds = _dataset()
    s = aggregates({"ingest": tmp_path / "ingest"}, tmp_path / "agg", ds, [1, 7], spark)
    assert s["rows_in"] == s["rows_out"] == len(df)
    assert s["rows_without_key"] == {"user": int(df["C10"].isna().sum()), "item": 0}
    assert s["columns"] == aggregate_columns(ds, [1, 7])
    got = pd.read_parquet(tmp_path / "agg" / "data").sort_values("event_id").reset_index(drop=True)
    assert got["event_id"].tolist() == list(range(len(df)))
    assert got["ts"].is_monotonic_increasing
    # match rows back to the input by content (event ids are ordered by time, then row hash)
    ref_in = df.assign(_k=np.arange(len(df)))
    ref = pd.concat([ref_in, _reference(df, "C10", "user", [1, 7]), _reference(df, "C11", "item", [1, 7])], axis=1)
    merged = got.merge(ref, on=["label", "ts", "I1", "C1", "C11"], suffixes=("", "_ref"))
    assert len(merged) == len(df)
    for col in s["columns"]:
        np.testing.assert_allclose(merged[col].to_numpy(float), merged[f"{col}_ref"].to_numpy(float), equal_nan=True,
                                   err_msg=col)
    # an event never counts itself: a key's first event has zero history in every window
    first = merged.sort_values("ts").groupby("C11").head(1)
    assert (first["item_events_7d"] == 0).all()
    meta = json.loads((tmp_path / "agg" / "aggregates.json").read_text())
    assert meta["keys"] == {"user": "C10", "item": "C11"} and meta["event_id"] == "event_id"

    # the aggregates reach the OutRank ranking: rank `aggregates/` as the ingest folder, dense roles extended
    from features.config import RankConfig
    from features.outrank import rank

    r = rank({"ingest": tmp_path / "agg"}, tmp_path / "rank", with_aggregate_roles(ds, [1, 7]),
             RankConfig(heuristic="mi", pairs_top_k=0), spark, exclude=["ts", "event_id"])
    assert r["features"] == 4 + 12
    ranking = pd.read_csv(tmp_path / "rank" / "ranking.tsv", sep="\t").set_index("feature")
    assert set(s["columns"]) <= set(ranking.index)
    # coverage = share of rows where the aggregate is defined (ctr needs a key and some history)
    assert ranking.loc["user_events_7d", "coverage"] == pytest.approx(merged["user_events_7d"].notna().mean())
    assert ranking.loc["item_ctr_1d", "coverage"] == pytest.approx(merged["item_ctr_1d"].notna().mean())
    assert (ranking["mi"] >= 0).all()


@pytest.mark.spark
def test_every_window_frame_grows_from_the_keys_first_event_so_a_hot_key_costs_linear_time(spark):
    """A bounded frame [t - W, t - 1] is re-aggregated by Spark whenever its start moves (rows x frame on a hot
    user: 15+ min in one task at 0.5M Zipf rows); the counts are differences of running totals instead, whose
    frames start at the partition's first row and grow incrementally. Their values: the brute-force test above."""
    import re

    from features.aggregates import _window_columns

    df = spark.createDataFrame([(1, T0, "u")], "label int, ts long, C10 string")
    plan = df.select(*_window_columns("C10", "user", "ts", "label", [1, 7]))._jdf.queryExecution().analyzed().toString()
    frames = set(re.findall(r"specifiedwindowframe\(RangeFrame, ([^,]+), (-?\d+)\)", plan))
    assert frames == {("unboundedpreceding$()", "-1"), ("unboundedpreceding$()", str(-DAY - 1)),
                      ("unboundedpreceding$()", str(-7 * DAY - 1))}


def _global_row_number_ids(df, ts: str, columns):
    """The previous method: one global window (all rows in a single partition)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.orderBy(F.col(ts), F.xxhash64(*[F.col(c) for c in columns]))
    return df.withColumn("event_id", (F.row_number().over(order) - 1).cast("long"))


@pytest.mark.spark
def test_event_ids_equal_the_global_row_number_without_a_single_partition(spark):
    from features.aggregates import add_event_ids

    pdf = _events(400, seed=9)
    pdf = pd.concat([pdf, pdf.iloc[:5]], ignore_index=True)   # repeated rows: equal (ts, hash)
    df = spark.createDataFrame(pdf.astype(object).where(pdf.notna(), None),
                               "label int, ts long, I1 double, C1 string, C10 string, C11 string").repartition(3)
    cols = list(pdf.columns)
    new = add_event_ids(df, "ts", cols, rows_per_bucket=60)
    plan = new._jdf.queryExecution().executedPlan().toString()
    assert "SinglePartition" not in plan and "Window" in plan, plan
    assert new.rdd.getNumPartitions() > 1
    old_plan = _global_row_number_ids(df, "ts", cols)._jdf.queryExecution().executedPlan().toString()
    assert "SinglePartition" in old_plan   # the check would catch the old method
    got = new.toPandas().sort_values("event_id").reset_index(drop=True)
    ref = _global_row_number_ids(df, "ts", cols).toPandas().sort_values("event_id").reset_index(drop=True)
    assert got["event_id"].tolist() == list(range(len(pdf)))
    pd.testing.assert_frame_equal(got[cols + ["event_id"]], ref[cols + ["event_id"]])
    # the same ids whatever the bucket size (one bucket: the old single window)
    one = add_event_ids(df, "ts", cols, rows_per_bucket=10_000).toPandas().sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(one[cols + ["event_id"]], ref[cols + ["event_id"]])


@pytest.mark.spark
def test_null_timestamps_and_missing_key_column_are_one_line_errors(spark, tmp_path):
    df = _events(20)
    df["ts"] = df["ts"].astype("Int64")
    df.loc[3, "ts"] = pd.NA
    _write_ingest(spark, df, tmp_path / "nulls")
    with pytest.raises(DataError, match=r"timestamp column 'ts' has 1 null value") as e:
        aggregates({"ingest": tmp_path / "nulls"}, tmp_path / "o1", _dataset(), [1], spark)
    assert "\n" not in str(e.value)
    _write_ingest(spark, _events(20), tmp_path / "ok")
    with pytest.raises(DataError, match=r"column 'user_key' \(dataset.roles.user_id\) is not in the data"):
        aggregates({"ingest": tmp_path / "ok"}, tmp_path / "o2", _dataset(user_id="user_key"), [1], spark)


def test_aggregate_roles_extend_dense_columns_for_ranking():
    ds = _dataset()
    ranked = with_aggregate_roles(ds, [1, 7])
    assert ranked.roles.dense[:1] == ["I1"]
    assert ranked.roles.dense[1:4] == ["user_events_1d", "user_clicks_1d", "user_ctr_1d"]
    assert len(ranked.roles.dense) == 1 + 12 and ds.roles.dense == ["I1"]
    no_label = DatasetConfig(path="/x", kind="interactions",
                             roles=ColumnRoles(user_id="u", item_id="i", timestamp="t"))
    assert aggregate_columns(no_label, [7]) == ["user_events_7d", "item_events_7d"]

"""Session data: item-metadata view (static, no TTL), per-item counts without a label, the m2trec service."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny_ctr import D, H, T, write_ingest

from features.config import ColumnRoles, DatasetConfig, ItemTableConfig
from features.errors import DataError


@pytest.mark.spark
def test_session_store_serves_item_metadata_and_counts(spark, tmp_path):
    from features.aggregates import aggregates
    from features.store.online import online_features
    from features.store.repo import materialize, register
    from features.store.training_set import entity_rows, historical_features
    from jobs.config import StoreConfig

    ds = DatasetConfig(path="/nonexistent", kind="sessions", name="tiny-sessions",
                       roles=ColumnRoles(session_id="session_id", user_id="user_id", item_id="item_id", timestamp="timestamp"),
                       items=ItemTableConfig(path="/nonexistent", item_id="item_id", categorical=["category"],
                                             multi_valued=["tokens"]))
    rows = [("s1", "u1", "100", T), ("s1", "u1", "101", T + 60), ("s2", "u2", "100", T + H), ("s3", "u1", "100", T + D)]
    write_ingest(spark, rows, ["session_id", "user_id", "item_id", "timestamp"],
                 "session_id string, user_id string, item_id string, timestamp long", tmp_path / "ingest")
    items = pd.DataFrame({"item_id": ["100", "101"], "category": ["cat01", "cat02"], "tokens": [["tok1", "tok2"], ["tok3"]]})
    spark.createDataFrame(items, "item_id string, category string, tokens array<string>").write.parquet(
        str(tmp_path / "ingest" / "items"))
    aggregates({"ingest": tmp_path / "ingest"}, tmp_path / "agg", ds, [1], spark)
    with pytest.raises(DataError, match="item table of 'tiny-sessions' is missing"):
        register({"aggregates": tmp_path / "agg"}, tmp_path / "nostore", ds, StoreConfig(ttl_days=2), spark)
    s = register({"aggregates": tmp_path / "agg", "ingest": tmp_path / "ingest"}, tmp_path / "store", ds,
                  StoreConfig(ttl_days=2), spark)
    assert s["views"] == ["item_stats", "items", "user_stats"] and "m2trec" in s["services"]
    layout = json.loads((tmp_path / "store" / "layout.json").read_text())
    assert layout["services"]["m2trec"] == ["items", "item_stats", "user_stats"]
    assert next(v for v in layout["views"] if v["name"] == "items")["features"] == {"category": "string",
                                                                                     "tokens": "array<string>"}
    materialize(tmp_path / "store")
    # metadata has no TTL: served although stamped at the first event, long before the end
    # (item 101's only stats row is stamped at its own event, which it does not count)
    assert online_features(tmp_path / "store", "item", "101") == {"category": "cat02", "tokens": ["tok3"],
                                                                 "item_events_1d": 0.0}
    # item 100 at T+1d: its 1-day window [T, T+1d-1] holds the events at T and T+1h
    assert online_features(tmp_path / "store", "item", "100", service="popularity") == {"item_events_1d": 2.0}
    got = historical_features(tmp_path / "store", entity_rows(tmp_path / "store"), service="m2trec")
    got = got.sort_values("event_id")
    assert got["category"].tolist() == ["cat01", "cat02", "cat01", "cat01"]
    assert got["item_events_1d"].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert got["user_events_1d"].tolist() == [0.0, 1.0, 0.0, 2.0]   # u1 at T+1d: the window [T, T+1d-1] holds 2

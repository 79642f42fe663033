"""Point-in-time reads: no value from after the event, nothing older than the TTL, training sets in the encoded layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tiny_ctr import D, H, T, TTL_DAYS

from features.numeric import DenseTransform, apply_dense
from features.store.training_set import build_training_set, historical_features


def _at(user: str, seconds: int) -> dict:
    return {"user_id": user, "event_timestamp": pd.Timestamp(T + seconds, unit="s", tz="UTC")}


@pytest.mark.spark
def test_values_written_after_the_event_are_never_used_and_ttl_expires(ctr_store):
    # user u1's stats rows are stamped T (0 earlier events in 7d), T+1h (1), T+2d (2) and T+9d (1)
    entity = pd.DataFrame([_at("u1", 2 * D - 1), _at("u1", 2 * D), _at("u1", 6 * D), _at("u1", 2 * D + TTL_DAYS * D + 1),
                           _at("u3", 12 * H + TTL_DAYS * D), _at("u3", 12 * H + TTL_DAYS * D + 1), _at("u9", 3 * D)])
    entity["row"] = range(len(entity))
    got = historical_features(ctr_store["store"], entity, features=["user_stats:user_events_7d", "user_stats:user_clicks_7d"])
    got = got.sort_values("row")["user_events_7d"].tolist()
    # 1 s before the T+2d row: the T+1h row (1 event), not the later one (2 events)
    assert got[0] == 1.0
    assert got[1] == 2.0          # the row stamped at the event's own time counts only earlier events
    assert got[2] == 2.0          # 4 days later: still within the 5-day TTL
    assert pd.isna(got[3])        # 5 days + 1 s after the newest row: missing, not the stale 2.0
    assert got[4] == 0.0 and pd.isna(got[5])   # u3: exactly at the TTL edge still valid, 1 s later missing
    assert pd.isna(got[6])        # a user the data never saw


@pytest.mark.spark
def test_training_set_through_feast_matches_the_events_in_the_encoded_layout(ctr_store, tmp_path):
    vocab = ctr_store["run"] / "vocab"
    s = build_training_set({"store": ctr_store["store"], "vocab": vocab}, tmp_path, service="dlrm")
    assert s["rows_in"] == s["rows_out"] == 7
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema["rows"] == {"train": 2, "validation": 3, "test": 2}
    assert schema["categorical"] == ["C1", "C10", "C11"] and schema["dense"][0] == "I1"
    assert schema["cuts"] == {"method": "time", "validation_start": T + 12 * H, "test_start": T + 3 * D}
    assert schema["vocab_sizes"] == {"C1": 4, "C10": 3, "C11": 4}
    parts = {k: pd.read_parquet(tmp_path / "encoded" / k) for k in ("train", "validation", "test")}
    df = pd.concat(parts.values(), ignore_index=True)
    assert df["ts"].tolist() == sorted(df["ts"].tolist())
    assert str(df["label"].dtype) == "int32" and str(df["C10"].dtype) == "int64" and str(df["I1"].dtype) == "float32"
    assert df["label"].tolist() == [1, 0, 1, 1, 0, 1, 0]
    # vocabulary ids (built on T, T+1h): C10 u1->2, u3 and u2 unseen->1, missing->0; C1 a->2, b->3, c unseen
    assert df["C10"].tolist() == [2, 2, 1, 2, 1, 0, 2]
    assert df["C1"].tolist() == [2, 3, 2, 2, 0, 1, 2]
    # dense columns by the vocab stage's recorded transform (features/numeric.py), missing -> 0
    i1 = DenseTransform.from_dict(json.loads((vocab / "schema.json").read_text())["dense_transforms"]["I1"])
    np.testing.assert_allclose(df["I1"], apply_dense(np.array([3.0, 1.0, 7.0, np.nan, 5.0, 2.0, 0.0]), i1), rtol=1e-6)
    # as-of-event aggregates (log1p): u1 had 0, 1, -, 2, -, -, 1 earlier events in 7 days
    np.testing.assert_allclose(df["user_events_7d"], np.log1p([0, 1, 0, 2, 0, 0, 1]), rtol=1e-6)
    # item i1 at T+2d: one earlier event (clicked) -> ctr 1; the two T+2d events do not see each other
    np.testing.assert_allclose(df["item_ctr_7d"], np.log1p([0, 0, 0, 1, 1, 0, 0.5]), rtol=1e-6)
    assert schema["unseen"]["validation"]["C10"] == 2
    # the columns both have are equal to the vocab stage's own encoded splits, row for row
    for split, part in parts.items():
        ref = pd.read_parquet(vocab / "encoded" / split)
        cols = list(ref.columns)
        pd.testing.assert_frame_equal(part[cols].sort_values(cols).reset_index(drop=True),
                                      ref.sort_values(cols).reset_index(drop=True))

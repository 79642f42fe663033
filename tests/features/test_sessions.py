"""Sessions: ordered sequences, gap sessionization, a time split that keeps cold items cold, item metadata."""

from __future__ import annotations

import json

import pytest
from feature_stages import write_ingest_folder

from features.config import ColumnRoles, DatasetConfig, IngestConfig, ItemTableConfig, SessionsConfig
from features.sessions import build_sessions

pytestmark = pytest.mark.spark


def _read(spark, folder):
    return [r.asDict() for r in spark.read.parquet(str(folder)).collect()]


def test_generated_sessions_split_keeps_cold_items_out_of_train(spark, sessions_ingested, sessions_built):
    truth = sessions_ingested["truth"]
    out, s, cfg = sessions_built["out"], sessions_built["summary"], sessions_built["config"]
    split = json.loads((out / "split.json").read_text())
    assert split["cuts"]["validation_start"] < truth["cold_start_time"]
    rows = {p: _read(spark, out / p) for p in ("train", "validation", "test")}
    assert sum(len(v) for v in rows.values()) == truth["sessions"] - split["too_short_sessions"]
    assert split["sessions"] == {p: len(v) for p, v in rows.items()}
    cold = {str(i) for i in truth["cold_items"]}
    items = {p: {i for r in v for i in r["items"]} for p, v in rows.items()}
    assert not items["train"] & cold
    assert (items["validation"] | items["test"]) & cold
    # every period ends where the next starts: later items stay later
    assert max(t for r in rows["train"] for t in r["timestamps"]) < split["cuts"]["validation_start"]
    assert max(t for r in rows["validation"] for t in r["timestamps"]) < split["cuts"]["test_start"]
    # items first seen per period, by a plain Python reference
    assert split["cold_items"] == {"train": len(items["train"]),
                                   "validation": len(items["validation"] - items["train"]),
                                   "test": len(items["test"] - items["train"] - items["validation"])}
    for r in rows["train"] + rows["test"]:
        assert r["timestamps"] == sorted(r["timestamps"]) and len(r["items"]) == len(r["timestamps"])
        assert cfg.min_length <= len(r["items"]) <= cfg.max_length
    # sessions are written in start-time order
    starts = [r["timestamps"][0] for r in rows["test"]]
    assert len(set(starts)) > 10
    assert s["rows_in"] == truth["rows"] and split["events_missing_metadata"] == 0


def test_generated_items_encoded_with_train_vocabulary(spark, sessions_ingested, sessions_built):
    out = sessions_built["out"]
    voc = json.loads((out / "item_vocab.json").read_text())
    items = {r["item_id"]: r for r in _read(spark, out / "items")}
    raw = {r["item_id"]: r for r in _read(spark, sessions_ingested["dir"] / "items")}
    assert len(items) == sessions_ingested["truth"]["n_items"] == len(raw)
    assert voc["sizes"]["category"] == 2 + len(voc["ids"]["category"]) <= 2 + 12
    for item_id, r in list(raw.items())[:50]:
        assert items[item_id]["category"] == voc["ids"]["category"].get(r["category"], 1)
        assert items[item_id]["tokens"] == [voc["ids"]["tokens"].get(t, 1) for t in r["tokens"]]
    assert all(v["in_catalogue"] for v in items.values())


def test_gap_sessions_lengths_and_missing_metadata_are_counted(spark, tmp_path):
    ev = [("u1", "a", 0), ("u1", "b", 60), ("u1", "c", 4000), ("u1", "d", 4010), ("u1", None, 4020),
          ("u2", "a", 100),                                    # alone: shorter than min_length
          ("u3", "a", 200), ("u3", "b", 210), ("u3", "x", 220), ("u3", "a", 230), ("u3", "b", 240)]
    rows = [{"user": u, "item": i, "ts": t} for u, i, t in ev]
    items = [{"item_id": "a", "brand": "k"}, {"item_id": "b", "brand": "k"}, {"item_id": "c", "brand": "new"},
             {"item_id": "d", "brand": None}]
    ing = write_ingest_folder(spark, rows, "user string, item string, ts long", tmp_path / "ingest",
                              items, "item_id string, brand string")
    ds = DatasetConfig(path=tmp_path, kind="interactions", roles=ColumnRoles(user_id="user", item_id="item", timestamp="ts"),
                       items=ItemTableConfig(path=tmp_path, categorical=["brand"]))
    cfg = SessionsConfig(gap_minutes=30, min_length=2, max_length=4, validation_share=0.0, test_share=0.0)
    build_sessions({"ingest": ing}, tmp_path / "out", ds, cfg, spark)
    got = {r["session_id"]: (r["user_id"], r["items"], r["timestamps"]) for r in _read(spark, tmp_path / "out" / "train")}
    assert got == {"u1#1": ("u1", ["a", "b"], [0, 60]), "u1#2": ("u1", ["c", "d"], [4000, 4010]),
                   "u3#1": ("u3", ["b", "x", "a", "b"], [210, 220, 230, 240])}  # truncated to its last 4
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["too_short_sessions"] == 1 and split["truncated_sessions"] == 1
    assert split["events_without_item"] == 1 and split["raw_sessions"] == 4
    assert split["items_missing_metadata"] == 1 and split["events_missing_metadata"] == 1
    assert split["sessions"] == {"train": 3, "validation": 0, "test": 0}
    # brand ids learnt on train items: 'k' (a, b) -> 2, 'new' (c) -> 3; the unknown item x gets zeros
    enc = {r["item_id"]: (r["brand"], r["in_catalogue"]) for r in _read(spark, tmp_path / "out" / "items")}
    assert enc == {"a": (2, True), "b": (2, True), "c": (3, True), "d": (0, True), "x": (0, False)}


def test_interactions_generator_gap_sessionization_matches_reference(spark, tmp_path):
    from features.ingest import ingest
    from features.synthetic import generate

    truth = generate("interactions", rows=1500, seed=5, output=tmp_path / "raw")
    ds = DatasetConfig(path=tmp_path / "raw" / truth["file"], format="csv", kind="interactions",
                       roles=ColumnRoles(user_id="user_id", item_id="item_id", timestamp="timestamp"))
    ingest({"raw": ds.path}, tmp_path / "ingest", ds, IngestConfig(), spark)
    gap = 6 * 60.0  # minutes; the generator spreads 1500 events over 90 days, so most users have long gaps
    cfg = SessionsConfig(gap_minutes=gap, min_length=1, max_length=1000, validation_share=0.0, test_share=0.0)
    split_summary = build_sessions({"ingest": tmp_path / "ingest"}, tmp_path / "out", ds, cfg, spark)
    got = sorted((r["user_id"], r["timestamps"]) for r in _read(spark, tmp_path / "out" / "train"))
    # reference: sort each user's events by (time, item), cut where the gap exceeds the limit
    import csv

    by_user: dict[str, list[tuple[int, str]]] = {}
    with open(ds.path) as fh:
        for r in csv.DictReader(fh):
            by_user.setdefault(r["user_id"], []).append((int(r["timestamp"]), r["item_id"]))
    ref = []
    for u, evs in by_user.items():
        evs.sort()
        cur = [evs[0][0]]
        for (t0, _), (t1, _) in zip(evs, evs[1:]):
            if t1 - t0 > gap * 60:
                ref.append((u, cur))
                cur = []
            cur.append(t1)
        ref.append((u, cur))
    assert got == sorted(ref)
    assert split_summary["rows_out"] == 1500 and len(got) > len(by_user)


def test_equal_timestamps_keep_file_order(spark, tmp_path):
    # b and a share t=5, d and c share t=7: the raw order, not the item order
    rows = [{"sid": "s1", "item": "b", "ts": 5}, {"sid": "s1", "item": "a", "ts": 5}, {"sid": "s1", "item": "e", "ts": 6},
            {"sid": "s1", "item": "d", "ts": 7}, {"sid": "s1", "item": "c", "ts": 7}]
    ing = write_ingest_folder(spark, rows, "sid string, item string, ts long", tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="sessions", roles=ColumnRoles(session_id="sid", item_id="item", timestamp="ts"))
    cfg = SessionsConfig(min_length=2, validation_share=0.0, test_share=0.0)
    build_sessions({"ingest": ing}, tmp_path / "out", ds, cfg, spark)
    got = _read(spark, tmp_path / "out" / "train")
    assert [(r["items"], r["timestamps"]) for r in got] == [(["b", "a", "e", "d", "c"], [5, 5, 6, 7, 7])]


def test_item_table_without_attributes_is_a_catalogue_of_ids(spark, tmp_path):
    rows = [{"sid": "s1", "item": "a", "ts": 1}, {"sid": "s1", "item": "b", "ts": 2}, {"sid": "s1", "item": "x", "ts": 3}]
    ing = write_ingest_folder(spark, rows, "sid string, item string, ts long", tmp_path / "ingest",
                              [{"item_id": "a"}, {"item_id": "b"}], "item_id string")
    ds = DatasetConfig(path=tmp_path, kind="sessions", roles=ColumnRoles(session_id="sid", item_id="item", timestamp="ts"),
                       items=ItemTableConfig(path=tmp_path))
    cfg = SessionsConfig(min_length=2, validation_share=0.0, test_share=0.0)
    split = build_sessions({"ingest": ing}, tmp_path / "out", ds, cfg, spark)
    enc = {r["item_id"]: r for r in _read(spark, tmp_path / "out" / "items")}
    assert enc == {"a": {"item_id": "a", "in_catalogue": True}, "b": {"item_id": "b", "in_catalogue": True},
                   "x": {"item_id": "x", "in_catalogue": False}}
    assert json.loads((tmp_path / "out" / "item_vocab.json").read_text())["sizes"] == {}
    assert split["items_missing_metadata"] == 1 and split["events_missing_metadata"] == 1

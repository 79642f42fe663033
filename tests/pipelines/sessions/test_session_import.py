"""`sessions prepare` importer: leave-one-out and time splits, cold items, attribute ids, reconciled counts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.errors import ConfigError, DataError
from pipelines.sessions.data import load_sessions
from pipelines.sessions.prepare import ImportConfig, import_sessions, pick_cold


def _rows(out, split) -> dict[str, list[str]]:
    return {r.session_id: list(r.items) for r in pd.read_parquet(out / split).itertuples()}


@pytest.fixture
def toy(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a b c d e\nu2 b c d\nu3 a b\nu4 c a e b\n\n")
    attrs = tmp_path / "item2attributes.json"
    attrs.write_text(json.dumps({"a": [1], "b": [1, 2], "c": [3], "d": [4], "z": [9]}))
    return seq, attrs


def test_leave_one_out_rows_counts_and_attribute_ids(toy, tmp_path):
    seq, attrs = toy
    s = import_sessions(seq, attrs, tmp_path / "out", ImportConfig())
    out = tmp_path / "out"
    assert _rows(out, "train") == {"u1": ["a", "b", "c"], "u4": ["c", "a"]}          # u2 keeps only b
    assert _rows(out, "validation") == {"u1": ["a", "b", "c", "d"], "u2": ["b", "c"], "u4": ["c", "a", "e"]}
    assert _rows(out, "test") == {"u1": ["a", "b", "c", "d", "e"], "u2": ["b", "c", "d"], "u4": ["c", "a", "e", "b"]}
    assert pd.read_parquet(out / "test")["timestamps"].map(list).tolist()[0] == [0, 1, 2, 3, 4]   # positions
    assert (s["rows_in"], s["rows_ok"], s["rows_quarantined"], s["quarantine_reasons"]) == (5, 4, 1, {"empty_line": 1})
    assert (s["sequences_in"], s["sequences_used"], s["sequences_too_short"]) == (4, 3, 1)
    assert (s["events_ok"], s["events_used"], s["events_in_too_short_sequences"]) == (14, 12, 2)
    assert s["sessions"] == {"train": 2, "validation": 3, "test": 3} and s["train_rows_too_short"] == 1
    assert (s["items"], s["items_without_attributes"], s["items_only_in_attributes"]) == (5, 1, 1)
    assert s["targets"] == {"validation": {"n": 3, "cold": 0}, "test": {"n": 3, "cold": 0}}
    items = pd.read_parquet(out / "items")
    # ids learnt on the train items a, b, c: "1" (twice) -> 2, "2" -> 3, "3" -> 4; d's "4" is unknown (1); e has none
    assert items["item_id"].tolist() == ["a", "b", "c", "d", "e"]
    assert [list(x) for x in items["attributes"]] == [[2], [2, 3], [4], [1], []]
    assert items["in_catalogue"].tolist() == [True, True, True, True, False]
    assert json.loads((out / "import.json").read_text())["sessions"] == s["sessions"]
    q = pd.read_parquet(out / "quarantine")
    assert q[["line", "reason"]].values.tolist() == [[5, "empty_line"]]
    assert len(pd.read_parquet(out / "quarantine_items")) == 0
    data = load_sessions(out)
    assert data.n_items == 5 and data.issues["items_without_metadata"] == 1 and data.sizes == {"attributes": 5}
    assert data.examples("test", max_length=10, positions=1).targets.tolist() == [5, 4, 2]   # e, d, b


def test_cold_items_never_train_and_are_counted_as_cold_targets(toy, tmp_path):
    seq, attrs = toy
    s = import_sessions(seq, attrs, tmp_path / "out", ImportConfig(cold_share=0.4, seed=3))
    cold = pick_cold(["a", "b", "c", "d", "e"], 0.4, 3)
    assert len(cold) == 2 and cold == pick_cold(["e", "d", "c", "b", "a"], 0.4, 3)    # seeded, order-free
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["held_out_items"] == sorted(cold) and s["cold_items"] == 2
    train = _rows(tmp_path / "out", "train")
    assert not {i for xs in train.values() for i in xs} & cold
    test = _rows(tmp_path / "out", "test")
    assert s["targets"]["test"]["cold"] == sum(1 for xs in test.values() if xs[-1] in cold)
    removed = sum(1 for xs in (["a", "b", "c"], ["b"], ["c", "a"]) for i in xs if i in cold)
    assert s["train_events_cold_removed"] == removed
    assert s["sessions"]["train"] + s["train_rows_too_short"] == 3


def test_max_length_keeps_the_last_items(toy, tmp_path):
    seq, attrs = toy
    import_sessions(seq, None, tmp_path / "out", ImportConfig(max_length=2))
    assert _rows(tmp_path / "out", "test")["u1"] == ["d", "e"]
    assert _rows(tmp_path / "out", "validation")["u1"] == ["c", "d"]
    assert _rows(tmp_path / "out", "train")["u1"] == ["b", "c"]
    items = pd.read_parquet(tmp_path / "out" / "items")
    assert list(items.columns) == ["item_id", "in_catalogue"] and not items["in_catalogue"].any()


def test_time_protocol_splits_sessions_by_start(tmp_path):
    log = tmp_path / "events.tsv"
    rows = [f"s{k}\ti{(k + j) % 6}\t{100 * k + j}" for k in range(10) for j in range(3)]
    log.write_text("session\titem\ttime\n" + "\n".join(reversed(rows)) + "\n")      # written newest first
    s = import_sessions(log, None, tmp_path / "out", ImportConfig(protocol="time", validation_share=0.2, test_share=0.2))
    assert s["format"] == "event_log" and s["sessions"] == {"train": 6, "validation": 2, "test": 2}
    assert list(_rows(tmp_path / "out", "test")) == ["s8", "s9"]
    assert _rows(tmp_path / "out", "test")["s9"] == ["i3", "i4", "i5"]
    assert pd.read_parquet(tmp_path / "out" / "test")["timestamps"].map(list).tolist()[1] == [900, 901, 902]
    assert s["targets"] == {"validation": None, "test": None}


def test_user_mistakes_are_one_line_errors(toy, tmp_path):
    seq, attrs = toy
    with pytest.raises(ConfigError, match="--protocol time needs event times and this file has none") as err:
        import_sessions(seq, attrs, tmp_path / "o1", ImportConfig(protocol="time"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--cold-share 1.0: must be at least 0 and below 1"):
        import_sessions(seq, attrs, tmp_path / "o2", ImportConfig(cold_share=1.0))
    with pytest.raises(ConfigError, match="--protocol 'random'"):
        import_sessions(seq, attrs, tmp_path / "o3", ImportConfig(protocol="random"))
    short = tmp_path / "short.txt"
    short.write_text("u1 a b\nu2 c\n")
    with pytest.raises(DataError, match="no sequence with at least 3 items"):
        import_sessions(short, None, tmp_path / "o4", ImportConfig())
    short.write_text("u1 a b c\n")
    with pytest.raises(DataError, match="no training row is left: .* sequences need 4 or more"):
        import_sessions(short, None, tmp_path / "o5", ImportConfig())


def test_attribute_ids_that_match_no_item_are_a_one_line_error(toy, tmp_path):
    seq, _ = toy
    attrs = tmp_path / "other.json"
    attrs.write_text(json.dumps({"B0001": [1], "B0002": [2]}))
    with pytest.raises(DataError, match="other.json: no item of the sequences has an attribute row .*'a'.*'B0001'") as err:
        import_sessions(seq, attrs, tmp_path / "out", ImportConfig())
    assert "\n" not in str(err.value)


def test_event_log_with_a_user_column_beside_the_session(tmp_path):
    log = tmp_path / "events.csv"
    log.write_text("session_id,user_id,item_id,timestamp\ns1,alice,a,1\ns1,alice,b,2\ns1,alice,c,3\ns1,alice,d,4\n")
    import_sessions(log, None, tmp_path / "out", ImportConfig())
    test = pd.read_parquet(tmp_path / "out" / "test")
    assert test[["session_id", "user_id"]].values.tolist() == [["s1", "alice"]]

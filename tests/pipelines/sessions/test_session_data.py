"""Reading the sessions-stage layout: catalogue, examples, and bad data counted instead of crashing.

Until features/sessions.py (the Spark stage) lands, the layout is written by the pandas adapter
`pipelines.sessions.layout` from the `sessions_small` generator output.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pipelines.sessions.data import SessionDataError, load_sessions
from pipelines.sessions.layout import encode_items, synthetic_layout, write_layout


@pytest.fixture(scope="module")
def layout(sessions_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("sessions_layout")
    synthetic_layout(sessions_small["path"], sessions_small["items"], out)
    return out


def test_reads_the_layout_into_a_catalogue_and_time_ordered_splits(layout, sessions_small):
    data = load_sessions(layout)
    truth = sessions_small["truth"]
    assert data.n_items == truth["n_items"]
    assert set(data.features.categorical) == {"category", "subcategory", "brand", "price_bucket"}
    assert set(data.features.multi_valued) == {"tokens"}
    assert data.issues["unknown_attribute_values"] == 0
    n_sessions = sum(data.issues[f"{s}_sessions_used"] for s in ("train", "validation", "test"))
    assert n_sessions == truth["sessions"] - sum(data.issues.get(f"{s}_sessions_too_short", 0) for s in ("train", "validation", "test"))
    # cold items of the generator are never seen in training and some of them are test targets
    counts = data.train_counts()
    index = {item: i + 1 for i, item in enumerate(data.item_ids)}
    cold = [index[str(i)] for i in truth["cold_items"]]
    assert int(counts[cold].sum()) == 0
    test = data.examples("test", max_length=10, positions=1)
    assert len(test) == data.issues["test_sessions_used"]
    assert torch.isin(test.targets, torch.tensor(cold)).sum() > 10


def test_examples_are_every_prefix_with_its_next_item(layout):
    data = load_sessions(layout)
    s = data.sessions["train"][0]
    ex = data.examples("train", max_length=3)
    assert len(ex) == sum(len(x) - 1 for x in data.sessions["train"])
    assert ex.lengths[: len(s) - 1].tolist() == [min(t, 3) for t in range(1, len(s))]
    assert ex.targets[: len(s) - 1].tolist() == s[1:].tolist()
    last = len(s) - 2
    assert ex.items[last, : ex.lengths[last]].tolist() == s[max(0, len(s) - 1 - 3): len(s) - 1].tolist()


def _bad_layout(out):
    """Two good sessions, an empty one, one with an item that has no metadata, an unknown attribute id."""
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["x", "x", "y", None],
                          "tokens": ["t1 t2", "t2", "", None]})
    enc, vocab = encode_items(items, "item_id", ["category"], ["tokens"])
    enc.loc[2, "category"] = 99                       # an id outside the vocabulary
    enc.at[1, "tokens"] = [2, -5]                     # a negative token id
    sess = pd.DataFrame({"session_id": ["s1", "s2", "s3", "s4"], "user_id": [None] * 4,
                         "items": [["a", "b", "c"], [], ["a", "zzz"], ["b", "zzz", "d", "a"]],
                         "timestamps": [[1, 2, 3], [], [4, 5], [6, 7, 8, 9]]})
    write_layout(out, {"train": sess, "validation": sess.iloc[:1], "test": sess.iloc[:1]}, enc, vocab)
    return out


def test_bad_session_data_is_counted_not_fatal(tmp_path):
    data = load_sessions(_bad_layout(tmp_path))
    assert data.issues["train_sessions_empty"] == 1
    assert data.issues["train_events_missing_metadata"] == 2           # two events of the unknown item 'zzz'
    assert data.issues["train_sessions_too_short"] == 1                 # s3 keeps only 'a'
    assert data.issues["train_sessions_used"] == 2
    assert data.issues["unknown_attribute_values"] == 2
    assert data.features.categorical["category"].tolist() == [0, 2, 2, 1, 0]   # padding, x, x, unknown, missing
    assert [s.tolist() for s in data.sessions["train"]] == [[1, 2, 3], [2, 4, 1]]
    offsets, values = data.features.multi_valued["tokens"]
    assert values[offsets[2]:offsets[3]].tolist() == [2, 1]            # -5 became 1 (unknown)


def test_missing_pieces_raise_one_line_errors(tmp_path):
    with pytest.raises(SessionDataError, match="sessions folder not found"):
        load_sessions(tmp_path / "nope")
    out = _bad_layout(tmp_path / "l")
    with pytest.raises(SessionDataError, match="attribute column 'brand' is missing"):
        load_sessions(out, attributes=["brand"])
    (out / "item_vocab.json").write_text(json.dumps({"sizes": {}}))
    with pytest.raises(SessionDataError, match="no vocabulary size for attribute 'category'"):
        load_sessions(out)
    pd.DataFrame({"session_id": ["s"], "items": [["zzz", "yyy"]]}).to_parquet(tmp_path / "only_unknown.parquet")
    out2 = _bad_layout(tmp_path / "l2")
    (out2 / "train" / "part-0.parquet").unlink()
    (tmp_path / "only_unknown.parquet").rename(out2 / "train" / "part-0.parquet")
    with pytest.raises(SessionDataError, match="no usable training session") as err:
        load_sessions(out2)
    assert "\n" not in str(err.value)


def test_items_without_metadata_stay_in_the_catalogue(tmp_path):
    """`in_catalogue = false` rows (the Spark stage without an item row) are items with missing attributes."""
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": [2, 0, 0], "in_catalogue": [True, False, False]})
    sess = pd.DataFrame({"session_id": ["s1", "s2"], "user_id": [None, None], "items": [["a", "b", "c"], ["c", "b"]],
                         "timestamps": [[1, 2, 3], [4, 5]]})
    write_layout(tmp_path, {"train": sess, "validation": sess.iloc[:0], "test": sess.iloc[:1]}, items,
                 {"sizes": {"category": 3}, "values": {"category": {"x": 2}}})
    data = load_sessions(tmp_path)
    assert data.item_ids == ["a", "b", "c"] and [s.tolist() for s in data.sessions["train"]] == [[1, 2, 3], [3, 2]]
    assert data.features.categorical["category"].tolist() == [0, 2, 0, 0]
    assert data.issues["items_without_metadata"] == 2 and data.issues["train_events_without_metadata"] == 4
    assert "train_events_missing_metadata" not in data.issues

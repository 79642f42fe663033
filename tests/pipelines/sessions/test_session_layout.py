"""The pandas layout writers: MovieLens-100K in both file forms, file-order ties, any synthetic catalogue."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.errors import DataError
from pipelines.sessions.layout import movielens_layout, read_movielens, synthetic_layout
from tests.pipelines.ml100k_files import write_ml100k


def _splits(out) -> dict[str, dict[str, list[str]]]:
    return {s: {r.session_id: list(r.items) for r in pd.read_parquet(out / s).itertuples()}
            for s in ("train", "validation", "test")}


@pytest.mark.parametrize("original", [True, False], ids=["grouplens_original", "with_headers"])
def test_movielens_reads_both_file_forms(tmp_path, original):
    folder = write_ml100k(tmp_path / "ml", original=original)
    ratings, movies = read_movielens(folder)
    assert len(ratings) == 17 and ratings["timestamp"].tolist()[:3] == [10, 5, 20]
    assert movies["title"].tolist()[2] == "Café au lait (1994)"          # latin-1
    summary = movielens_layout(folder, tmp_path / "out", holdout=1, cold_share=0.0)
    assert summary["sessions"] == {"train": 3, "validation": 3, "test": 3}
    items = pd.read_parquet(tmp_path / "out" / "items").set_index("item_id")
    vocab = json.loads((tmp_path / "out" / "item_vocab.json").read_text())
    names = {i: v for v, i in vocab["ids"]["category"].items()}
    assert [names.get(c) for c in items["category"]] == ["Animation", "Action", "Comedy", "Action", "Crime", "Drama"]
    years = {i: v for v, i in vocab["ids"]["year"].items()}
    assert [years.get(y, "missing") for y in items["year"]] == ["1995", "1995", "1994", "1995", "1995", "missing"]
    genres = {i: v for v, i in vocab["ids"]["genres"].items()}
    assert [genres[g] for g in items.loc["4", "genres"]] == ["Action", "Comedy", "Drama"]


def test_movielens_forms_give_the_same_layout(tmp_path):
    for form in (True, False):
        movielens_layout(write_ml100k(tmp_path / f"ml{form}", original=form), tmp_path / f"out{form}", holdout=1,
                         cold_share=0.0)
    assert _splits(tmp_path / "outTrue") == _splits(tmp_path / "outFalse")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "outTrue" / "items"),
                                  pd.read_parquet(tmp_path / "outFalse" / "items"))


def test_movielens_equal_timestamps_keep_file_order(tmp_path):
    movielens_layout(write_ml100k(tmp_path / "ml", original=True), tmp_path / "out", holdout=1, cold_share=0.0)
    got = _splits(tmp_path / "out")
    # user 1 rated 5 then 2 at t=20, user 3 rated 4 then 3 at t=3: file order, not item order
    assert got["test"] == {"u1": ["1", "5", "2", "3", "4", "6"], "u2": ["2", "3", "1", "6", "4"],
                           "u3": ["6", "5", "4", "3", "2", "1"]}
    assert got["validation"]["u1"] == ["1", "5", "2", "3", "4"]
    assert got["train"] == {"u1": ["1", "5", "2", "3"], "u2": ["2", "3", "1"], "u3": ["6", "5", "4", "3"]}
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["ties"] == "file order"


def test_movielens_missing_file_is_a_one_line_error(tmp_path):
    folder = write_ml100k(tmp_path / "ml", original=True)
    (folder / "u.item").unlink()
    with pytest.raises(DataError, match="u.item: not found") as err:
        read_movielens(folder)
    assert "\n" not in str(err.value)


def _synthetic(tmp_path, item_columns: dict[str, list[str]]):
    ev = pd.DataFrame({"session_id": ["s1", "s1", "s1", "s2", "s2", "s3", "s3"], "user_id": ["u"] * 7,
                       "item_id": ["b", "a", "c", "a", "b", "c", "a"], "timestamp": [5, 5, 6, 1, 2, 9, 10]})
    ev.to_csv(tmp_path / "sessions.csv", index=False)
    pd.DataFrame({"item_id": ["a", "b", "c"], **item_columns}).to_csv(tmp_path / "items.csv", index=False)
    return tmp_path / "sessions.csv", tmp_path / "items.csv"


def test_synthetic_layout_uses_the_catalogue_columns_and_keeps_file_order(tmp_path):
    events, items = _synthetic(tmp_path, {"genre": ["x", "y", "x"], "tags": ["t1 t2", "t2", ""]})
    synthetic_layout(events, items, tmp_path / "out", validation_share=0.0, test_share=0.0)
    enc = pd.read_parquet(tmp_path / "out" / "items")
    assert list(enc.columns) == ["item_id", "genre", "tags"]                 # every column but item_id
    assert enc["genre"].tolist() == [2, 3, 2] and enc["tags"].tolist() == [2, 3, 0]    # single-valued; "" is missing
    assert _splits(tmp_path / "out")["train"]["s1"] == ["b", "a", "c"]       # b and a share t=5: file order
    synthetic_layout(events, items, tmp_path / "out2", validation_share=0.0, test_share=0.0,
                     categorical=["genre"], multi_valued=["tags"])
    assert [list(x) for x in pd.read_parquet(tmp_path / "out2" / "items")["tags"]] == [[3, 2], [2], []]


def test_synthetic_layout_reads_truth_json_declared_columns(tmp_path):
    events, items = _synthetic(tmp_path, {"genre": ["x", "y", "x"], "tags": ["t1 t2", "t2", ""], "note": ["n"] * 3})
    (tmp_path / "truth.json").write_text(json.dumps({"item_metadata": {"categorical": ["genre"], "multi_valued": ["tags"]}}))
    synthetic_layout(events, items, tmp_path / "out", validation_share=0.0, test_share=0.0)
    vocab = json.loads((tmp_path / "out" / "item_vocab.json").read_text())
    assert vocab["categorical"] == ["genre"] and vocab["multi_valued"] == ["tags"]


def test_synthetic_layout_names_a_missing_catalogue_column(tmp_path):
    events, items = _synthetic(tmp_path, {"genre": ["x", "y", "x"]})
    with pytest.raises(DataError, match=r"items.csv: column 'category' is missing \(the file has item_id, genre\)") as err:
        synthetic_layout(events, items, tmp_path / "out", categorical=["category"])
    assert "--categorical" in str(err.value) and "\n" not in str(err.value)

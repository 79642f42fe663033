"""`RowEncoder`: raw typed rows encoded with a run's vocabularies and dense transform, as the vocab stage does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.runtime.errors import EncodedDataError
from pipelines.ctr.row_encoder import RowEncoder, dense_transforms, log1p_clipped

VOCAB = pa.table({"feature": ["C1", "C1", "C1", "tags", "tags"], "value": ["a", "b", "c", "x", "y"],
                  "id": [2, 3, 4, 2, 3], "count": [9, 5, 2, 7, 3]})
SCHEMA = {"label": "y", "dense": ["I1"], "categorical": ["C1", "tags"], "multi_valued": ["tags"]}


def test_unseen_values_get_the_unknown_id_and_missing_values_the_missing_id():
    enc = RowEncoder.from_tables(VOCAB, SCHEMA)
    rows = pa.table({"y": [1, 0, 0, 1], "I1": [0.0, None, -2.0, 9.0], "C1": ["c", "zzz", None, "a"],
                     "tags": [["y", "x"], [], None, ["x", "new", None]]})
    out = enc.encode(rows)
    assert out.column("C1").to_pylist() == [4, 1, 0, 2]
    assert out.column("tags").to_pylist() == [[3, 2], [0], [0], [2, 1, 0]]   # empty / null bag -> [0]
    assert out.column("I1").type == pa.float32() and out.column("y").type == pa.int32()
    np.testing.assert_array_equal(out.column("I1").to_numpy(), np.float32([0.0, 0.0, 0.0, np.log1p(9.0)]))


def test_a_label_free_input_encodes_without_a_label_column():
    enc = RowEncoder.from_tables(VOCAB, SCHEMA)
    out = enc.encode(pa.table({"I1": [1.0], "C1": ["b"], "tags": [["x"]]}))
    assert out.column_names == ["I1", "C1", "tags"] and out.column("C1").to_pylist() == [3]


def test_dense_transform_is_read_from_the_schema_and_an_unknown_one_is_refused():
    assert log1p_clipped(np.array([np.nan, -5.0, 0.0])).tolist() == [0.0, 0.0, 0.0]
    assert set(dense_transforms({"dense": ["I1"], "dense_transform": "log1p(max(x,0)), missing -> 0"})) == {"I1"}
    with pytest.raises(EncodedDataError, match="dense_transform is 'zscore', which predict does not know"):
        dense_transforms({"dense": ["I1"], "dense_transform": "zscore"}, "runs/r/vocab/schema.json")
    with pytest.raises(EncodedDataError, match="dense_transforms.I1 cannot be read"):
        dense_transforms({"dense": ["I1"], "dense_transforms": {"I1": {"column": "I1", "kind": "cube", "mean": 0, "sd": 1}}})


def test_per_column_transforms_and_bucket_features_follow_the_schemas_records():
    from features.numeric import DenseTransform, apply_dense, bucket_ids

    t = DenseTransform(column="I1", kind="signed_log", mean=0.5, sd=2.0, bucket_splits=[0.0, 10.0], bucket_column="I1__bucket")
    schema = {**SCHEMA, "dense_transform": "per column, see dense_transforms (features/numeric.py)",
              "dense_transforms": {"I1": t.to_dict()}, "buckets": ["I1__bucket"]}
    enc = RowEncoder.from_tables(VOCAB, schema)
    raw = pa.table({"I1": [-3.0, None, 20.0], "C1": ["a", "b", "c"], "tags": [["x"], ["y"], []]})
    out = enc.encode(raw, ["C1", "I1__bucket"])
    x = np.array([-3.0, np.nan, 20.0])
    np.testing.assert_array_equal(out.column("I1").to_numpy(), apply_dense(x, t))
    assert out.column("I1__bucket").to_pylist() == bucket_ids(x, [0.0, 10.0]).tolist() == [1, 0, 3]
    assert enc.source("I1__bucket") == "I1" and enc.source("C1") == "C1"


def test_a_run_without_its_vocab_or_model_files_is_one_line_naming_the_stage(tmp_path):
    from pipelines.ctr.serving import RunModel

    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "schema.json").write_text("{")
    with pytest.raises(EncodedDataError, match=r"vocab: no vocab there; give a run whose 'vocab' stage finished"):
        RowEncoder.load(tmp_path / "vocab")
    (tmp_path / "vocab" / "vocab").mkdir()
    with pytest.raises(EncodedDataError, match=r"schema.json: cannot be read \(.*\); re-run the run's 'vocab' stage"):
        RowEncoder.load(tmp_path / "vocab")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(EncodedDataError, match=r"model: no model.pt there; give a run whose 'train' stage finished"):
        RunModel.load(tmp_path / "model")


def test_a_vocabulary_is_hashed_once_and_gives_index_ins_ids():
    import pyarrow.compute as pc

    values = [f"{i:08x}" for i in range(5000)]
    vocab = pa.table({"feature": ["C1"] * 5000, "value": values, "id": np.arange(2, 5002)})
    enc = RowEncoder.from_tables(vocab, {"label": "y", "dense": [], "categorical": ["C1"]})
    rng = np.random.default_rng(0)
    batch = [values[i] for i in rng.integers(0, 5000, size=300)] + ["unseen", None, values[7], "unseen"]
    got = enc.encode(pa.table({"C1": batch})).column("C1").to_numpy()
    pos = pc.index_in(pa.array(batch), value_set=pa.array(values)).to_numpy(zero_copy_only=False)
    expected = np.where(np.isnan(pos.astype(float)), 1, np.nan_to_num(pos.astype(float)) + 2).astype(np.int64)
    expected[-3] = 0
    np.testing.assert_array_equal(got, expected)
    assert got[-4:].tolist() == [1, 0, 9, 1]
    index = enc.index("C1")
    enc.encode(pa.table({"C1": batch[:5]}))
    assert enc.index("C1") is index      # kept between batches, not rebuilt
    assert enc.encode(pa.table({"C1": pa.array([None, None], pa.string())})).column("C1").to_pylist() == [0, 0]


def test_the_index_cache_is_written_once_memory_mapped_and_ignored_when_the_vocabulary_changes(tmp_path):
    import json
    import os

    import pyarrow.parquet as pq

    from pipelines.ctr.row_encoder import ensure_index_cache

    values = [f"{i:06x}" for i in range(6000)]   # over vocab_index.SMALL: a hash table, and a small one
    vocab = pa.table({"feature": ["C1"] * 6000 + ["C2"] * 2, "value": values + ["p", "q"],
                      "id": np.r_[np.arange(2, 6002), [2, 3]]})
    (tmp_path / "vocab" / "vocab").mkdir(parents=True)
    pq.write_table(vocab, tmp_path / "vocab" / "vocab" / "part-0.parquet")
    (tmp_path / "vocab" / "schema.json").write_text(json.dumps({"label": "y", "dense": [], "categorical": ["C1", "C2"]}))
    rows = pa.table({"C1": [values[5], "nope", None, values[5999]], "C2": ["q", "p", "zz", None]})
    plain = RowEncoder.load(tmp_path / "vocab").encode(rows)
    assert ensure_index_cache(tmp_path / "vocab") and (tmp_path / "cache" / "vocab_index" / "stamp.json").exists()
    cached = RowEncoder.load(tmp_path / "vocab")
    assert isinstance(cached.index("C1").table, np.memmap) and cached.index("C2").small
    assert cached.encode(rows).equals(plain) and plain.column("C1").to_pylist() == [7, 1, 0, 6001]
    assert ensure_index_cache(tmp_path / "vocab")                      # current: kept as it is
    pq.write_table(vocab.slice(0, 6001), tmp_path / "vocab" / "vocab" / "part-0.parquet")  # the stage re-ran
    os.utime(tmp_path / "vocab" / "vocab" / "part-0.parquet", ns=(1, 1))
    changed = RowEncoder.load(tmp_path / "vocab")
    assert not isinstance(changed.index("C1").ids, np.memmap)         # built from the Parquet, not the stale cache
    assert changed.encode(rows).column("C2").to_pylist() == [1, 2, 1, 0]   # "q" left the vocabulary

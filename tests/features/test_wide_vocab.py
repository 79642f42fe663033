"""Wide data: the vocab stage encodes 200 columns correctly, and the Spark plan it builds does not grow with the
column count (single-valued columns are joined at most ENCODE_BATCH per plan)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.config import ColumnRoles, DatasetConfig, VocabConfig
from features.numeric import DenseTransform, apply_dense
from features.vocab import ENCODE_BATCH, apply_vocab, assign_ids, build_vocab, value_counts

pytestmark = pytest.mark.spark


def wide_table(rows: int, categorical: int, dense: int, seed: int = 0) -> pa.Table:
    """label y, timestamp ts, C0.. (strings, 1 in 10 missing, up to 30 values), D0.. (doubles, 1 in 20 missing)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {"y": pa.array(rng.integers(0, 2, rows).astype(np.int32)),
                                 "ts": pa.array(np.arange(rows, dtype=np.int64))}
    for j in range(categorical):
        v = rng.integers(0, 30, rows)
        cols[f"C{j}"] = pa.array([None if k % 10 == j % 10 else f"v{x}" for k, x in enumerate(v)], pa.string())
    for j in range(dense):
        x = rng.normal(0.0, 3.0, rows) * (j + 1)
        cols[f"D{j}"] = pa.array([None if k % 20 == j % 20 else float(v) for k, v in enumerate(x)], pa.float64())
    return pa.table(cols)


def _plan_joins(df) -> int:
    return df._jdf.queryExecution().analyzed().toString().count("Join ")


def test_apply_vocab_keeps_each_plan_to_one_batch_of_joins(spark):
    feats = [f"c{k}" for k in range(70)]
    rows = [(i, *[None if (i + k) % 9 == 0 else f"v{(i * (k + 1)) % 7}" for k in range(70)]) for i in range(40)]
    df = spark.createDataFrame(rows, "i int, " + ", ".join(f"{f} string" for f in feats))
    vocab = assign_ids(value_counts(df.where("i < 30"), feats), min_count=2)    # rows 30.. may hold unseen values
    enc = apply_vocab(df, vocab, feats)
    assert _plan_joins(enc) <= ENCODE_BATCH                 # was one join per feature (70) in one plan
    want = {(r["feature"], r["value"]): r["id"] for r in vocab.collect()}
    got = {r["i"]: r for r in enc.collect()}
    assert sorted(got) == list(range(40))
    for i, *values in rows:
        assert [got[i][f] for f in feats] == [0 if v is None else want.get((f, v), 1) for f, v in zip(feats, values)]


def test_vocab_stage_encodes_200_columns(spark, tmp_path: Path):
    table = wide_table(rows=600, categorical=100, dense=99)
    (tmp_path / "ingest" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "ingest" / "data" / "part-0.parquet")
    cat, dense = [f"C{j}" for j in range(100)], [f"D{j}" for j in range(99)]
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", timestamp="ts", dense=dense, categorical=cat))
    t0 = time.perf_counter()
    build_vocab({"ingest": tmp_path / "ingest"}, tmp_path / "vocab", ds, VocabConfig(min_count=1), spark)
    seconds = time.perf_counter() - t0
    schema = json.loads((tmp_path / "vocab" / "schema.json").read_text())
    assert sum(schema["rows"].values()) == 600 and schema["categorical"] == cat and schema["dense"] == dense
    vocab = pq.read_table(tmp_path / "vocab" / "vocab").to_pylist()
    ids = {(r["feature"], r["value"]): r["id"] for r in vocab}
    raw = {c: table.column(c).to_pylist() for c in table.column_names}
    tf = {c: DenseTransform.from_dict(d) for c, d in schema["dense_transforms"].items()}
    for split in ("train", "validation", "test"):
        enc = pq.read_table(tmp_path / "vocab" / "encoded" / split)
        ts = enc.column("ts").to_pylist()
        for c in cat:
            want = [0 if raw[c][t] is None else ids.get((c, raw[c][t]), 1) for t in ts]
            assert enc.column(c).to_pylist() == want, (split, c)
        for c in dense:
            x = np.array([np.nan if raw[c][t] is None else raw[c][t] for t in ts])
            np.testing.assert_allclose(enc.column(c).to_numpy(), apply_dense(x, tf[c]), rtol=1e-6, atol=1e-6)
    print(f"200 columns x 600 rows: {seconds:.1f} s")

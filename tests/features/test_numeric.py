"""Dense transforms chosen on train (log1p / signed log, standardized, buckets): the pure functions, and the vocab
stage's Spark encoding equal to them row for row; bucket columns reach the feature spec, the plan and the batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feature_stages import write_ingest_folder

from features.config import ColumnRoles, DatasetConfig, RankConfig, VocabConfig
from features.numeric import DenseTransform, apply_dense, bucket_ids, choose_kind, transformed
from features.vocab import build_vocab


def test_pure_transforms_by_hand():
    t = DenseTransform(column="a", kind="signed_log", mean=0.5, sd=0.25, bucket_splits=[-1.0, 0.0, 3.0])
    x = np.array([-(math.e - 1), 0.0, math.e - 1, np.nan])
    assert apply_dense(x, t).tolist() == [-6.0, -2.0, 2.0, 0.0]              # (±1 - 0.5) / 0.25, missing -> 0
    assert apply_dense(pa.array([math.e - 1, None]), t).tolist() == [2.0, 0.0]  # pyarrow nulls are missing
    assert bucket_ids(np.array([-5.0, -1.0, 0.5, 3.0, np.nan]), t.bucket_splits).tolist() == [1, 2, 3, 4, 0]
    assert transformed(np.array([-3.0]), "log1p").tolist() == [0.0]           # log1p clips negatives
    assert choose_kind(0.0) == "log1p" and choose_kind(-0.1) == "signed_log" and choose_kind(None) == "log1p"
    assert DenseTransform.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="kind 'sqrt' is not one of log1p, signed_log"):
        DenseTransform.from_dict({**t.to_dict(), "kind": "sqrt"})


def _rows(n: int) -> list[dict]:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        count = float(rng.poisson(3.0) * 10) if i % 9 else None        # non-negative, some missing
        amount = float(rng.normal(0.0, 200.0))                            # negative and positive
        rows.append({"y": int(rng.random() < 0.3), "ts": i, "count": count, "amount": amount, "c": "ab"[i % 2]})
    return rows


@pytest.mark.spark
def test_vocab_stage_encodes_dense_columns_as_the_pure_function_does(spark, tmp_path: Path):
    rows = _rows(400)
    ing = write_ingest_folder(spark, rows, "y int, ts long, count double, amount double, c string", tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", timestamp="ts", dense=["count", "amount"],
                                                                   categorical=["c"]))
    build_vocab({"ingest": ing}, tmp_path / "vocab", ds, VocabConfig(min_count=1, numeric_buckets=4), spark)
    schema = json.loads((tmp_path / "vocab" / "schema.json").read_text())
    tf = {c: DenseTransform.from_dict(d) for c, d in schema["dense_transforms"].items()}
    assert tf["count"].kind == "log1p" and tf["amount"].kind == "signed_log"
    # mean and sd are those of the train rows (ts before the validation cut), missing left out
    train = [r for r in rows if r["ts"] < schema["cuts"]["validation_start"]]
    for c in ("count", "amount"):
        z = transformed(np.array([r[c] for r in train if r[c] is not None]), tf[c].kind)
        assert tf[c].mean == pytest.approx(z.mean(), rel=1e-9) and tf[c].sd == pytest.approx(z.std(), rel=1e-9)
    # bucket splits on train: 4 quantile buckets, recorded, the ids in an int64 column with a table size
    assert schema["buckets"] == ["count__bucket", "amount__bucket"]
    assert len(tf["amount"].bucket_splits) == 3 and tf["amount"].bucket_column == "amount__bucket"
    assert schema["vocab_sizes"]["amount__bucket"] == 5
    sizes = json.loads((tmp_path / "vocab" / "sizes.json").read_text())
    assert sizes["count__bucket"] == len(tf["count"].bucket_splits) + 2
    # every split, every row: Spark's encoded values equal the pure functions on the raw values
    by_ts = {r["ts"]: r for r in rows}
    n = 0
    for split in ("train", "validation", "test"):
        t = pq.read_table(tmp_path / "vocab" / "encoded" / split)
        assert t.schema.field("amount").type == pa.float32() and t.schema.field("amount__bucket").type == pa.int64()
        raw = [by_ts[ts] for ts in t.column("ts").to_pylist()]
        for c in ("count", "amount"):
            x = np.array([np.nan if r[c] is None else r[c] for r in raw])
            np.testing.assert_allclose(t.column(c).to_numpy(), apply_dense(x, tf[c]), rtol=1e-6, atol=1e-6)
            assert t.column(f"{c}__bucket").to_pylist() == bucket_ids(x, tf[c].bucket_splits).tolist()
        n += t.num_rows
        if split == "train":   # standardized on train
            assert abs(float(np.mean(t.column("amount").to_numpy()))) < 1e-4
            assert float(np.std(t.column("amount").to_numpy())) == pytest.approx(1.0, abs=1e-4)
    assert n == 400
    # the bucket columns get embedding tables: rank lists them, the plan embeds them, the batches carry them
    from embeddings.config import EmbeddingsConfig
    from embeddings.planner import plan_stage
    from embeddings.spec import EmbeddingPlan
    from features.outrank import rank
    from pipelines.ctr.batches import EncodedSchema, batch_spec, parquet_batches

    rank({"ingest": ing, "vocab": tmp_path / "vocab"}, tmp_path / "rank", ds,
         RankConfig(heuristic="mi", pairs_top_k=0, min_score=-1.0), spark)
    spec = {r["name"]: r for r in json.loads((tmp_path / "rank" / "feature_spec.json").read_text())["features"]}
    assert spec["amount__bucket"]["role"] == "categorical" and spec["amount__bucket"]["vocab_size"] == 5
    assert spec["amount__bucket"]["bucket_of"] == "amount" and spec["amount__bucket"]["mi"] == spec["amount"]["mi"]
    plan_stage({"rank": tmp_path / "rank"}, tmp_path / "plan", EmbeddingsConfig())
    plan = EmbeddingPlan.load(tmp_path / "plan" / "embedding_plan.json")
    assert {"count__bucket", "amount__bucket"} <= {f for t in plan.tables for f in t.features}
    bspec = batch_spec(EncodedSchema.load(tmp_path / "vocab" / "schema.json"), plan)
    b = next(parquet_batches(tmp_path / "vocab" / "encoded" / "train", bspec, 32))
    assert b.dense.shape == (32, 2) and int(b.sparse["amount__bucket"].values().max()) <= 4

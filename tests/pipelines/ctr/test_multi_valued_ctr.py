"""A CTR data set with a multi-valued column (genres) goes through vocab -> rank -> plan -> train (single process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embeddings.config import EmbeddingsConfig
from embeddings.planner import plan_stage
from embeddings.spec import EmbeddingPlan
from features.config import ColumnRoles, DatasetConfig, RankConfig, VocabConfig
from features.outrank import rank
from features.vocab import build_vocab
from pipelines.ctr.batches import EncodedSchema, batch_spec, parquet_batches
from pipelines.runtime.config import TrainConfig
from pipelines.ctr.trainer import train_stage
from tests.features.feature_stages import write_ingest_folder

pytestmark = [pytest.mark.spark, pytest.mark.slow]

GENRES = ["drama", "comedy", "action", "horror", "family", "noir"]


def _rows(n: int, seed: int = 0) -> list[dict]:
    """The label is 1 mostly when 'drama' is among the row's genres; C1 is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(0, 4))                      # 0..3 genres, an empty list now and then
        g = [str(x) for x in rng.choice(GENRES, size=k, replace=False)]
        p = 0.8 if "drama" in g else 0.15
        rows.append({"y": int(rng.random() < p), "ts": i, "x": float(rng.normal()), "c": "abc"[i % 3],
                     "genres": g if i % 50 else None})
    return rows


def test_multi_valued_ctr_features_train_end_to_end(spark, tmp_path: Path):
    ing = write_ingest_folder(spark, _rows(3000), "y int, ts long, x double, c string, genres array<string>",
                              tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", timestamp="ts", dense=["x"],
                                                                   categorical=["c"], multi_valued=["genres"]))
    build_vocab({"ingest": ing}, tmp_path / "vocab", ds, VocabConfig(min_count=1), spark)
    schema = json.loads((tmp_path / "vocab" / "schema.json").read_text())
    assert schema["multi_valued"] == ["genres"] and schema["categorical"] == ["c"]
    assert schema["vocab_sizes"]["genres"] == 2 + len(GENRES)
    # encoded bags: list<int64>, the row's genres in order, [0] for a missing or empty list
    vocab = {r["value"]: r["id"] for r in spark.read.parquet(str(tmp_path / "vocab" / "vocab"))
             .where("feature = 'genres'").collect()}
    train = pq.read_table(tmp_path / "vocab" / "encoded" / "train")
    t = train.schema.field("genres").type
    assert pa.types.is_list(t) and t.value_type == pa.int64()
    raw = {r["ts"]: r["genres"] for r in _rows(3000)}
    for ts, bag in zip(train.column("ts").to_pylist(), train.column("genres").to_pylist()):
        assert bag == ([vocab[g] for g in raw[ts]] if raw[ts] else [0])
    assert max(len(b) for b in train.column("genres").to_pylist()) == 3
    # the batch: a KJT bag per row for genres, one id per row for c
    plan_dir = tmp_path / "plan"
    rank({"ingest": ing, "vocab": tmp_path / "vocab"}, tmp_path / "rank", ds, RankConfig(permutations=2), spark)
    spec_roles = {r["name"]: r["role"] for r in json.loads((tmp_path / "rank" / "feature_spec.json").read_text())["features"]}
    assert spec_roles["genres"] == "multi_valued"
    plan_stage({"rank": tmp_path / "rank"}, plan_dir, EmbeddingsConfig())
    plan = EmbeddingPlan.load(plan_dir / "embedding_plan.json")
    assert "genres" in [f for t in plan.tables for f in t.features]
    bspec = batch_spec(EncodedSchema.load(tmp_path / "vocab" / "schema.json"), plan)
    b = next(parquet_batches(tmp_path / "vocab" / "encoded" / "train", bspec, 64))
    lengths = b.sparse["genres"].lengths()
    assert lengths.max().item() == 3 and lengths.min().item() >= 1
    # training (single process) learns the planted genre signal
    cfg = TrainConfig(batch_size=128, epochs=3, checkpoint_every=1000, log_every=10)
    cfg.model.dense_arch, cfg.model.over_arch = [8], [8]
    cfg.ray.single_process = True
    out = tmp_path / "train"
    out.mkdir()
    summary = train_stage({"vocab": tmp_path / "vocab", "plan": plan_dir}, out, cfg, EmbeddingsConfig(),
                          seed=0, show_progress=False)
    assert summary["val_auc"] > 0.75

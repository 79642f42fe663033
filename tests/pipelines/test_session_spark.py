"""The session models on the real Spark sessions stage (features/sessions.py): ingest → sessions → M2TRec."""

from __future__ import annotations

import pytest
import torch

from pipelines.config import ModelConfig, TrainConfig
from pipelines.session_data import load_sessions
from pipelines.session_evaluate import evaluate_session_model
from pipelines.session_train import build_model, train_session_model


@pytest.fixture(scope="module")
def spark_sessions(spark, sessions_small, tmp_path_factory):
    from features.config import ColumnRoles, DatasetConfig, IngestConfig, ItemTableConfig, SessionsConfig
    from features.ingest import ingest
    from features.sessions import build_sessions

    ds = DatasetConfig(name="s", path=sessions_small["path"], format="csv", kind="sessions",
                       roles=ColumnRoles(session_id="session_id", user_id="user_id", timestamp="timestamp", item_id="item_id"),
                       items=ItemTableConfig(path=sessions_small["items"], format="csv", item_id="item_id",
                                             categorical=["category", "subcategory", "brand", "price_bucket"],
                                             multi_valued=["tokens"]))
    root = tmp_path_factory.mktemp("spark_sessions")
    ingest({"raw": sessions_small["path"], "items": sessions_small["items"]}, root / "ingest", ds, IngestConfig(), spark)
    build_sessions({"ingest": root / "ingest"}, root / "sessions", ds, SessionsConfig(), spark)
    return root / "sessions"


@pytest.mark.spark
@pytest.mark.slow
def test_spark_stage_output_trains_m2trec_that_finds_cold_items(spark_sessions, sessions_small):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_sessions(spark_sessions)
        index = {item: i + 1 for i, item in enumerate(data.item_ids)}
        cold = [index[str(i)] for i in sessions_small["truth"]["cold_items"] if str(i) in index]
        assert len(cold) > 0.9 * len(sessions_small["truth"]["cold_items"])     # cold items are in the catalogue
        assert int(data.train_counts()[cold].sum()) == 0
        assert data.issues["train_sessions_used"] > 500 and data.issues.get("items_without_metadata", 0) == 0
        cfg = TrainConfig(model=ModelConfig(name="m2trec", hidden=16, layers=1, max_length=10), epochs=1,
                          batch_size=256, dense_learning_rate=3e-3, device="cpu")
        model = build_model(cfg.model, data)
        train_session_model(model, data, cfg, seed=0)
        r = evaluate_session_model(model, data, "test", max_length=10)
        assert r["cold"]["n"] > 10 and r["cold"]["recall@20"] > 0
        assert r["overall"]["recall@20"] > 0.1
    finally:
        torch.set_num_threads(before)

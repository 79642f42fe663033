"""The session models on the real Spark sessions stage (features/sessions.py): ingest → sessions → M2TRec."""

from __future__ import annotations

import pytest
import torch

from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import load_sessions
from pipelines.sessions.evaluate import evaluate_session_model
from pipelines.sessions.train import build_model, train_session_model


@pytest.mark.spark
@pytest.mark.slow
def test_spark_stage_output_trains_m2trec_that_finds_cold_items(sessions_built, sessions_small):
    """The sessions stage's output on `sessions_small` (built once for the session, tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_sessions(sessions_built["out"])
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


@pytest.mark.spark
def test_id_models_train_without_an_item_table(spark, tmp_path):
    """No dataset.items: every item is kept (no metadata), SASRec and GRU4Rec train; M2TRec says what it needs."""
    from features.config import ColumnRoles, DatasetConfig, SessionsConfig
    from features.sessions import build_sessions
    from pipelines.sessions.train import TrainingError
    from tests.features.feature_stages import write_ingest_folder

    rows = [{"sid": f"s{s}", "item": f"i{(s + k) % 7}", "ts": 10 * s + k} for s in range(40) for k in range(4)]
    ing = write_ingest_folder(spark, rows, "sid string, item string, ts long", tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="sessions", roles=ColumnRoles(session_id="sid", item_id="item", timestamp="ts"))
    split = build_sessions({"ingest": ing}, tmp_path / "out", ds, SessionsConfig(validation_share=0.1, test_share=0.1), spark)
    data = load_sessions(tmp_path / "out")
    assert data.n_items == 7 and data.issues["items_without_metadata"] == 7
    n_train, n_test = split["sessions"]["train"], split["sessions"]["test"]
    assert n_train > 25 and n_test > 2 and sum(split["sessions"].values()) == 40
    assert data.issues["train_sessions_used"] == n_train and data.issues["train_events_without_metadata"] == 4 * n_train
    assert data.features.keys == []
    for name in ("sasrec", "gru4rec"):
        cfg = TrainConfig(model=ModelConfig(name=name, hidden=8, layers=1, heads=1, max_length=4), epochs=1,
                          batch_size=32, device="cpu")
        model = build_model(cfg.model, data)
        history = train_session_model(model, data, cfg, seed=0)
        assert len(history["loss"]) == 1
        assert evaluate_session_model(model, data, "test", max_length=4)["overall"]["n"] == n_test
    with pytest.raises(TrainingError, match="m2trec encodes items by their attributes"):
        build_model(ModelConfig(name="m2trec", hidden=8), data)

"""The train stage in single-process mode: outputs and their values, the NaN guard, the id guard."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from embeddings.config import EmbeddingsConfig
from embeddings.spec import EmbeddingPlan
from pipelines.ctr import loop
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.errors import CheckpointMismatchError, IdOutOfRangeError, TrainingDivergedError
from pipelines.ctr.trainer import train_stage


def single_cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(batch_size=256, epochs=2, checkpoint_every=10, log_every=5, **kw)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return cfg


def trained_tables(encoded_ctr: dict, out: Path, emb: EmbeddingsConfig) -> tuple[list[torch.Tensor], int, int]:
    """Train 9 single-process steps into `out`; the exported embedding tables, their nonzero and total weights."""
    out.mkdir()
    train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, single_cfg(max_steps=9), emb,
                seed=0, show_progress=False)
    sd = torch.load(out / "model" / "model.pt", weights_only=True)
    tables = [v for k, v in sd.items() if "embedding_bags" in k]
    return tables, sum(int((t != 0).sum()) for t in tables), sum(t.numel() for t in tables)


def test_single_process_stage_writes_checkpoints_metrics_report_and_model(encoded_ctr, tmp_path: Path):
    out = tmp_path / "train"
    out.mkdir()
    summary = train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, single_cfg(),
                          EmbeddingsConfig(), seed=0, show_progress=False)
    rows = encoded_ctr["schema"]["rows"]
    steps = 2 * (rows["train"] // 256)
    assert summary["rows_in"] == rows["train"] and summary["steps"] == steps
    m = json.loads((out / "metrics.json").read_text())
    val = m["evaluation"]["splits"]["validation"]
    assert val["rows"] == rows["validation"]
    assert 0.58 < val["auc"] <= 1.0                       # planted signal is learnt
    assert abs(val["mean_prediction"] - val["observed_ctr"]) < 0.1
    assert m["evaluation"]["embedding_bytes"] == encoded_ctr["plan_obj"].total_bytes
    assert [r["step"] for r in m["history"]["validation"]] == [steps // 2, steps]
    assert len(m["history"]["train"]) == steps // 5
    assert m["training"]["examples"] == steps * 256 and m["training"]["examples_per_s"] > 0
    # checkpoints: every 10 steps plus each epoch end, two kept, the last is the final one
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == [f"step_{30:08d}", f"step_{steps:08d}"]
    assert m["training"]["checkpoint"] == f"checkpoints/step_{steps:08d}"
    for name in ("report.md", "model_card.md", "training_curves.png", "calibration_test.png",
                 "model/model.pt", "model/embeddings.pt", "model/model.json"):
        assert (out / name).stat().st_size > 0, name
    assert "| validation |" in (out / "report.md").read_text()
    sd = torch.load(out / "model" / "model.pt", weights_only=True)
    assert any(k.endswith("t_C1.weight") for k in sd)
    # run again into the same folder (a crash after the last checkpoint, a re-run): it resumes at the
    # end, takes no step and reports the restored model
    again = train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, single_cfg(),
                        EmbeddingsConfig(), seed=0, show_progress=False)
    assert again["steps"] == steps and again["val_auc"] == pytest.approx(summary["val_auc"], abs=1e-9)
    assert json.loads((out / "metrics.json").read_text())["history"]["resumed_from"] == [steps]
    # ... but not with checkpoints of another plan: one line naming the folder and the fix
    plan = EmbeddingPlan.from_json(encoded_ctr["plan_obj"].to_json())
    plan.tables[0].rows += 5
    (tmp_path / "plan_rows").mkdir()
    plan.save(tmp_path / "plan_rows" / "embedding_plan.json")
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/step_\d+: cannot resume, .*another model or embedding plan"
                                                      r".*; delete .*checkpoints or train into a new output folder"):
        train_stage({"vocab": encoded_ctr["vocab"], "plan": tmp_path / "plan_rows"}, out, single_cfg(), EmbeddingsConfig(),
                    seed=0, show_progress=False)


def test_nan_loss_stops_the_run_naming_the_step_and_saving_the_batch(encoded_ctr, tmp_path: Path, monkeypatch):
    calls = {"n": 0}

    def bce(logits, labels):
        calls["n"] += 1
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "F", SimpleNamespace(binary_cross_entropy_with_logits=bce))
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 3 \(epoch 0, batch 2\)"):
        train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, tmp_path, single_cfg(max_steps=6),
                    EmbeddingsConfig(), seed=0, show_progress=False)
    saved = torch.load(tmp_path / "nan_batch_step3_rank0.pt", weights_only=True)
    assert saved["step"] == 3 and saved["labels"].shape == (256,) and saved["keys"] == encoded_ctr["plan_obj"].tables[0].features + [
        f for t in encoded_ctr["plan_obj"].tables[1:] for f in t.features]


def test_id_outside_table_is_a_user_error_before_any_kernel(encoded_ctr, tmp_path: Path):
    plan = EmbeddingPlan.from_json(encoded_ctr["plan_obj"].to_json())
    plan.tables[1].rows = 3                     # C2 has far more ids than 3
    (tmp_path / "plan").mkdir()
    plan.save(tmp_path / "plan" / "embedding_plan.json")
    with pytest.raises(IdOutOfRangeError, match=r"feature 'C2' has id \d+ but its table has 3 rows"):
        train_stage({"vocab": encoded_ctr["vocab"], "plan": tmp_path / "plan"}, tmp_path / "out", single_cfg(max_steps=2),
                    EmbeddingsConfig(), seed=0, show_progress=False)


def test_dsl_keeps_the_tables_within_their_budget(encoded_ctr, tmp_path: Path):
    from embeddings.config import DSLConfig

    emb = EmbeddingsConfig(dsl=DSLConfig(enabled=True, density=0.3, update_every=3, init="random"))
    out = tmp_path / "dsl"
    tables, active, total = trained_tables(encoded_ctr, out, emb)
    assert len(tables) == len(encoded_ctr["plan_obj"].tables)
    assert 0.25 * total < active <= round(0.3 * total) + len(tables)   # one global budget of 30% of the weights
    updates = json.loads((out / "metrics.json").read_text())["history"]["dsl"]  # steps 3, 6, 9
    assert [u["step"] for u in updates] == [3, 6, 9] and all(u["active"] <= u["budget"] for u in updates)
    assert all(0 <= u["exchanged"] <= u["scheduled"] for u in updates) and updates[0]["scheduled"] > 0
    assert (out / "training_curves.png").stat().st_size > 0


def test_early_stopping_ends_the_run_when_validation_auc_stops_improving(encoded_ctr, tmp_path: Path):
    cfg = single_cfg(dense_learning_rate=1e-12, early_stopping_patience=1)
    cfg.epochs = 5
    out = tmp_path / "es"
    out.mkdir()
    s = train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, cfg,
                    EmbeddingsConfig(learning_rate=1e-12), seed=0, show_progress=False)
    per_epoch = encoded_ctr["schema"]["rows"]["train"] // 256
    history = json.loads((out / "metrics.json").read_text())["history"]["validation"]
    assert s["steps"] == 2 * per_epoch and len(history) == 2          # epoch 2 did not beat epoch 1: stop
    assert history[1]["auc"] == pytest.approx(history[0]["auc"], abs=1e-4)

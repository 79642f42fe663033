"""Early stopping (issues 13.8 and 16): one rule in both loops, and the reported and exported model is the best
validation epoch's (the CTR loop used to keep the last epoch's)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from embeddings.config import EmbeddingsConfig
from pipelines.ctr import loop
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.runtime.early_stopping import EarlyStopping
from pipelines.ctr.evaluate import load_model
from pipelines.ctr.trainer import train_stage

# validation scores of epochs 0..3: epoch 1 is the best; 2 and 3 are not better by more than min_delta 0.01
SCORES = [0.70, 0.80, 0.805, 0.74]


def test_the_rule_patience_min_delta_zero_patience_and_nan():
    s = EarlyStopping()
    assert [s.update(e, x, patience=2, min_delta=0.01) for e, x in enumerate(SCORES)] == [True, True, False, False]
    assert (s.best_epoch, s.best, s.bad_epochs, s.stopped) == (1, 0.80, 2, True)
    never = EarlyStopping()                                       # patience 0: never stops early
    for e in range(10):
        never.update(e, 0.5, patience=0, min_delta=0.0)
    assert not never.stopped and never.best_epoch == 0 and never.bad_epochs == 9
    one = EarlyStopping()                                         # patience 1: stops at the first non-improving epoch
    assert [one.update(e, x, 1, 0.0) for e, x in enumerate([0.5, 0.6, 0.6])] == [True, True, False] and one.stopped
    nan = EarlyStopping()
    assert not nan.update(0, math.nan, 2, 0.0) and nan.best_epoch is None
    assert nan.update(1, 0.1, 2, 0.0) and nan.best_epoch == 1     # a NaN epoch never becomes the best
    assert EarlyStopping.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def _ctr_cfg() -> TrainConfig:
    cfg = TrainConfig(batch_size=256, epochs=6, checkpoint_every=10, log_every=5, early_stopping_patience=2,
                      early_stopping_min_delta=0.01, dense_learning_rate=1e-2)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return cfg


def test_ctr_loop_stops_by_the_rule_and_reports_and_exports_the_best_epoch(encoded_ctr, tmp_path: Path, monkeypatch):
    real: list[float] = []

    def scripted_auc(y, p):                                      # the loop's validation AUC, scripted per epoch
        real.append(float(loop_auc(y, p)))
        return SCORES[len(real) - 1]

    loop_auc = loop.auc
    monkeypatch.setattr(loop, "auc", scripted_auc)
    out = tmp_path / "train"
    out.mkdir()
    cfg = _ctr_cfg()
    summary = train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, cfg,
                          EmbeddingsConfig(learning_rate=0.1), seed=0, show_progress=False)
    per_epoch = encoded_ctr["schema"]["rows"]["train"] // 256
    m = json.loads((out / "metrics.json").read_text())
    assert [v["auc"] for v in m["history"]["validation"]] == SCORES        # 2 epochs without a gain > 0.01: stop
    assert summary["steps"] == 4 * per_epoch
    best = f"checkpoints/step_{2 * per_epoch:08d}"
    assert m["training"]["best_epoch"] == 1 and m["training"]["checkpoint"] == best
    # the best checkpoint outlives checkpoints_to_keep=2; the newest two are kept beside it
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"step_{2 * per_epoch:08d}", f"step_{4 * per_epoch - 2:08d}", f"step_{4 * per_epoch:08d}"]
    # reported: the evaluation is the best epoch's model (the loop saw the same validation rows)
    assert m["evaluation"]["splits"]["validation"]["auc"] == pytest.approx(real[1], abs=1e-6)
    assert abs(real[3] - real[1]) > 1e-4                             # ... which is not the last epoch's
    # exported: model.pt holds the best checkpoint's weights, not the last one's
    exported = torch.load(out / "model" / "model.pt", weights_only=True)
    dense_in = len(encoded_ctr["schema"]["dense"])
    for name, weights in ((best, True), (f"checkpoints/step_{4 * per_epoch:08d}", False)):
        sd = load_model(out / name, encoded_ctr["plan_obj"], dense_in, cfg).state_dict()
        same = all(torch.equal(sd[k], exported[k]) for k in exported)
        assert same is weights, name


def test_session_loop_follows_the_same_rule_and_keeps_the_best_epoch(layout):
    from pipelines.sessions.data import load_sessions
    from pipelines.sessions.train import build_model, train_session_model

    data = load_sessions(layout)
    train = TrainConfig(model=ModelConfig(name="gru4rec", hidden=16, layers=1, max_length=10), epochs=6, batch_size=256,
                        dense_learning_rate=3e-3, device="cpu", early_stopping_patience=2, early_stopping_min_delta=0.01)
    torch.manual_seed(0)
    model = build_model(train.model, data)
    seen: list[dict] = []

    def validate(m):
        seen.append(copy.deepcopy(m.state_dict()))
        return SCORES[len(seen) - 1]

    history = train_session_model(model, data, train, seed=0, validate=validate)
    assert history["validation"] == SCORES and len(history["loss"]) == 4     # the CTR loop's epochs, the same stop
    assert history["best_epoch"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    assert any(not torch.equal(v, seen[3][k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def layout(sessions_small, tmp_path_factory):
    from pipelines.sessions.layout import synthetic_layout

    out = tmp_path_factory.mktemp("sessions_layout_es")
    synthetic_layout(sessions_small["path"], sessions_small["items"], out)
    return out

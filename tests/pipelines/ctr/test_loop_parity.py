"""One training runtime for both families (issue 16): the session loop honours `max_steps`, `log_every`,
`dense_optimizer`, `shuffle` and `checkpoint_every` as the CTR loop does, and `fail_at_step` plants the same
failure in both (one marker, once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from embeddings.config import EmbeddingsConfig
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.runtime.failure import FAIL_MARKER, PlantedFailure
from pipelines.sessions.data import load_sessions
from pipelines.sessions.train import build_model, train_session_model
from pipelines.ctr.trainer import train_stage


@pytest.fixture(scope="module")
def layout(sessions_small, tmp_path_factory):
    from pipelines.sessions.layout import synthetic_layout

    out = tmp_path_factory.mktemp("sessions_layout_parity")
    synthetic_layout(sessions_small["path"], sessions_small["items"], out)
    return out


def _session_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": ModelConfig(name="gru4rec", hidden=16, layers=1, max_length=10), "epochs": 3,
                          "batch_size": 256, "dense_learning_rate": 3e-3, "device": "cpu", **kw})


def test_session_loop_honours_max_steps_log_every_and_dense_optimizer(layout, tmp_path: Path):
    data = load_sessions(layout)
    torch.manual_seed(0)
    model = build_model(_session_cfg().model, data)
    history = train_session_model(model, data, _session_cfg(max_steps=5, log_every=2, dense_optimizer="adagrad"),
                                  seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert len(data.examples("train", 10)) // 256 > 5                 # an epoch is longer than max_steps
    assert len(history["loss"]) == 1                                    # stopped in epoch 0, after step 5
    assert [r["step"] for r in history["train"]] == [2, 4] and all(r["epoch"] == 0 for r in history["train"])
    state = torch.load(tmp_path / "ckpt" / "epoch_0001" / "session_state.pt", weights_only=True)
    assert json.loads(state["progress"])["step"] == 5
    assert all("sum" in s for s in state["optimizer"]["state"].values())      # Adagrad's state, not Adam's exp_avg


def test_session_loop_honours_shuffle(layout):
    data = load_sessions(layout)

    def losses(seed: int, shuffle: bool) -> list[float]:
        train = _session_cfg(epochs=1, max_steps=4, log_every=1, shuffle=shuffle)
        train.model.dropout, train.model.softmax = 0.0, "full"      # the order is the only thing the seed moves
        torch.manual_seed(0)
        model = build_model(train.model, data)
        return [r["loss"] for r in train_session_model(model, data, train, seed=seed)["train"]]

    assert losses(0, shuffle=False) == losses(1, shuffle=False)        # file order, whatever the seed
    assert losses(0, shuffle=True) != losses(1, shuffle=True)


def test_session_checkpoint_every_writes_step_checkpoints_inside_the_epoch(layout, tmp_path: Path):
    data = load_sessions(layout)
    torch.manual_seed(0)
    train = _session_cfg(epochs=1, max_steps=7, checkpoint_every=3, checkpoints_to_keep=5)
    train_session_model(build_model(train.model, data), data, train, seed=0, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0000_step_00000003", "epoch_0000_step_00000006",
                                                          "epoch_0001"]
    progress = json.loads(torch.load(tmp_path / "epoch_0000_step_00000006" / "session_state.pt",
                                     weights_only=True)["progress"])
    assert (progress["epoch"], progress["step"], progress["batch"]) == (0, 6, 6)


def test_fail_at_step_is_the_same_planted_failure_in_both_loops(layout, encoded_ctr, tmp_path: Path):
    data = load_sessions(layout)
    torch.manual_seed(0)
    model = build_model(_session_cfg().model, data)
    cfg = _session_cfg(fail_at_step=3, epochs=1)
    with pytest.raises(PlantedFailure, match=r"planted worker failure at step 3 \(training.fail_at_step\)"):
        train_session_model(model, data, cfg, seed=0, checkpoint_dir=tmp_path / "s" / "checkpoints")
    assert json.loads((tmp_path / "s" / FAIL_MARKER).read_text())["step"] == 3
    history = train_session_model(model, data, cfg, seed=0, checkpoint_dir=tmp_path / "s" / "checkpoints")
    assert len(history["loss"]) == 1                                    # once only: the re-run goes past step 3

    ctr = TrainConfig(batch_size=256, epochs=1, checkpoint_every=2, log_every=5, fail_at_step=3)
    ctr.model.dense_arch, ctr.model.over_arch = [16], [16]
    ctr.ray.single_process = True
    (tmp_path / "c").mkdir()
    with pytest.raises(PlantedFailure, match=r"planted worker failure at step 3 \(training.fail_at_step\)"):
        train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, tmp_path / "c", ctr,
                    EmbeddingsConfig(), seed=0, show_progress=False)
    assert json.loads((tmp_path / "c" / FAIL_MARKER).read_text())["step"] == 3

"""Training windows: every next item a target once; for GRU4Rec the window loss equals the per-prefix loss."""

from __future__ import annotations

import numpy as np
import torch

from models.item_features import ItemFeatures
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.loop import SessionTrainStep
from pipelines.sessions.train import build_model, train_session_model
from pipelines.sessions.windows import SessionWindows, training_windows


def test_long_sessions_are_cut_from_the_end_and_every_next_item_is_a_target_once():
    w = training_windows([np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8]), np.array([9])], max_length=2)
    assert w.items.tolist() == [[4, 5], [2, 3], [1, 0], [7, 0]]
    assert w.targets.tolist() == [[5, 6], [3, 4], [2, 0], [8, 0]]
    assert w.lengths.tolist() == [2, 2, 1, 1] and len(w) == 4 and len(w.subset(torch.tensor([0, 3]))) == 2


def _data() -> SessionData:
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 9, size=int(rng.integers(2, 7))) for _ in range(40)]
    return SessionData([f"i{i}" for i in range(8)], ItemFeatures({"c": torch.zeros(9, dtype=torch.long)}), {"c": 2},
                       {"train": train, "validation": [], "test": []})


def test_gru4rec_window_loss_equals_the_mean_loss_over_every_prefix():
    data = _data()
    cfg = ModelConfig(name="gru4rec", hidden=8, dropout=0.0, max_length=6, softmax="full")
    torch.manual_seed(0)
    model = build_model(cfg, data).eval()
    step = SessionTrainStep(model, cfg, torch.zeros(9))
    cand = torch.arange(1, 9)
    ex = data.examples("train", 6)
    w = training_windows(data.sessions["train"], 6)
    assert int((w.targets > 0).sum()) == len(ex) == sum(len(s) - 1 for s in data.sessions["train"])
    per_prefix = step(ex.items, ex.lengths, ex.targets, cand)
    per_window = step(w.items, w.lengths, w.targets, cand)
    assert torch.allclose(per_prefix, per_window, atol=1e-6)


def test_gru4rec_trains_on_windows():
    data = _data()
    data.sessions["train"] = [np.array([(s + k) % 8 + 1 for k in range(12)]) for s in range(8)] * 10
    tc = TrainConfig(model=ModelConfig(name="gru4rec", hidden=16, dropout=0.0, max_length=6, softmax="full",
                                       train_windows=True), epochs=6, batch_size=16, dense_learning_rate=2e-2, device="cpu")
    model = build_model(tc.model, data)
    history = train_session_model(model, data, tc, seed=0)
    assert history["examples"] == 80 * 2      # 12 items in windows of 7 from the end: items 6..12 and 1..6
    assert history["loss"][-1] < 0.3 * history["loss"][0]


def test_left_to_right_models_read_the_last_window_position_as_the_session_representation():
    """forward_all at the last position equals forward (SASRec, causal M2TRec with last pooling, GRU4Rec)."""
    from models.item_features import ItemFeatures as F

    data = _data()
    data.features = F({"c": torch.arange(9) % 3})
    data.sizes = {"c": 3}
    items, lengths = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]]), torch.tensor([3, 4])
    for cfg in (ModelConfig(name="sasrec", hidden=8, heads=2, dropout=0.0, max_length=6),
                ModelConfig(name="m2trec", hidden=8, heads=2, dropout=0.0, max_length=6, causal=True, pooling="last",
                            task_attributes=[], loss_weights=[1.0], item_ids="on", train_windows=True),
                ModelConfig(name="gru4rec", hidden=8, dropout=0.0)):
        torch.manual_seed(0)
        model = build_model(cfg, data).eval()
        with torch.no_grad():
            every, last = model.forward_all(items, lengths), model(items, lengths)[0]
        assert torch.allclose(every[torch.arange(2), lengths - 1], last, atol=1e-5), cfg.name


def test_every_window_position_is_the_prefix_that_ends_there():
    """Training windows see what evaluation sees: forward_all at every position t equals forward on the prefix ending
    at t (SASRec, causal M2TRec metadata-only and hybrid, GRU4Rec). Causal M2TRec counted positions from the window's
    end before #19, so position t of a window differed from that prefix evaluated alone (max gap 1.3 here)."""
    from models.item_features import ItemFeatures as F

    data = _data()
    data.features = F({"c": torch.arange(9) % 3})
    data.sizes = {"c": 3}
    items = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    lengths = torch.tensor([5, 3])
    m2trec = dict(name="m2trec", hidden=8, heads=2, dropout=0.0, max_length=6, causal=True, pooling="last",
                  task_attributes=[], loss_weights=[1.0], train_windows=True)
    for cfg in (ModelConfig(name="sasrec", hidden=8, heads=2, dropout=0.0, max_length=6),
                ModelConfig(**m2trec, item_ids="on"), ModelConfig(**m2trec, item_ids="off"),
                ModelConfig(name="gru4rec", hidden=8, dropout=0.0)):
        torch.manual_seed(0)
        model = build_model(cfg, data).eval()
        with torch.no_grad():
            every = model.forward_all(items, lengths)
            for b in range(2):
                for t in range(int(lengths[b])):
                    alone = model(items[b:b + 1, :t + 1], torch.tensor([t + 1]))[0][0]
                    assert torch.allclose(every[b, t], alone, atol=1e-5), (cfg.name, cfg.item_ids, b, t)


def test_m2trec_trains_on_windows_only_left_to_right():
    import pytest

    from pipelines.sessions.train import TrainingError

    data = _data()
    with pytest.raises(TrainingError, match="set causal: true and pooling: last"):
        build_model(ModelConfig(name="m2trec", task_attributes=[], loss_weights=[1.0], train_windows=True), data)


def test_bucketed_order_is_a_permutation_of_batches_of_similar_length_in_random_order():
    """A batch is padded to its longest window: the loop batches windows of similar length (less padding, same windows)."""
    lengths = torch.tensor([1, 9, 2, 8, 1, 9, 2, 8, 3, 7, 3, 7])
    w = SessionWindows(torch.zeros(12, 9, dtype=torch.long), lengths, torch.zeros(12, 9, dtype=torch.long))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    got = w.bucket(order, batch_size=2)
    assert sorted(got.tolist()) == list(range(12))                           # every window once
    widths = [int(lengths[b].max()) for b in got.view(6, 2)]
    assert sum(widths) == 1 + 2 + 3 + 7 + 8 + 9                              # padded width 30, random batches pay more
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)   # batches in a shuffled order
    assert torch.equal(w.bucket(order, 2), got)                              # a function of the epoch's order
    assert sum(int(lengths[b].max()) for b in order.view(6, 2)) > 30

"""GRU4Rec baseline: unseen items get no row, padding is ignored, a tiny run learns a fixed transition."""

from __future__ import annotations

import numpy as np
import torch

from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.item_features import ItemFeatures
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.train import build_model, train_session_model


def test_unseen_items_are_not_scorable():
    m = GRU4Rec(GRU4RecConfig(catalogue_size=5, embedding=4, hidden=4), train_items=torch.tensor([2, 4]))
    assert m.scorable().tolist() == [False, False, True, False, True]
    assert m.embedding_bytes() == 3 * 4 * 4


def test_padding_content_does_not_change_the_session_representation():
    torch.manual_seed(0)
    m = GRU4Rec(GRU4RecConfig(catalogue_size=6, hidden=8, dropout=0.0), torch.arange(1, 6)).eval()
    a = m(torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]]), torch.tensor([2, 1]))[0]
    b = m(torch.tensor([[1, 2, 5, 5], [3, 4, 4, 4]]), torch.tensor([2, 1]))[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_learns_that_the_next_item_depends_on_the_last_one():
    """Two interleaved cycles: after item i comes i+2 (mod 10, 1-based): only the order tells which."""
    rng = np.random.default_rng(0)
    train = [np.array([(s + 2 * k) % 10 + 1 for k in range(5)]) for s in rng.integers(0, 10, size=300)]
    data = SessionData([f"i{i}" for i in range(10)], ItemFeatures({"c": torch.zeros(11, dtype=torch.long)}), {"c": 2},
                       {"train": train, "validation": [], "test": []})
    cfg = TrainConfig(model=ModelConfig(name="gru4rec", hidden=16, dropout=0.0, max_length=6, softmax="full"),
                      epochs=8, batch_size=64, dense_learning_rate=2e-2, device="cpu")
    model = build_model(cfg.model, data)
    history = train_session_model(model, data, cfg, seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    model.eval()
    with torch.no_grad():
        scores = model(torch.arange(1, 11)[:, None], torch.ones(10, dtype=torch.long))[0] @ model.encode_catalogue().T
    scores[:, 0] = -torch.inf
    assert scores.argmax(1).tolist() == [(i + 1) % 10 + 1 for i in range(1, 11)]


def test_model_config_builds_recbole_shapes_embedding_64_gru_128_without_biases():
    data = SessionData([f"i{i}" for i in range(10)], ItemFeatures({"c": torch.zeros(11, dtype=torch.long)}), {"c": 2},
                       {"train": [np.arange(1, 11)], "validation": [], "test": []})
    model = build_model(ModelConfig(name="gru4rec", hidden=64, dropout=0.3), data)
    assert model.items.embedding.weight.shape == (11, 64)
    assert (model.gru.input_size, model.gru.hidden_size, model.gru.num_layers, model.gru.bias) == (64, 128, 1, False)
    assert (model.out.in_features, model.out.out_features) == (128, 64)
    assert model.dropout.p == 0.3
    assert build_model(ModelConfig(name="gru4rec", hidden=32, rnn_hidden=48), data).gru.hidden_size == 48

"""SASRec baseline: unseen items get no row, padding is ignored, a tiny run learns a fixed transition."""

from __future__ import annotations

import numpy as np
import torch

from models.item_features import ItemFeatures
from models.sasrec import SASRec, SASRecConfig
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.train import build_model, train_session_model


def cycle_world(n: int = 12, sessions: int = 200, seed: int = 0) -> SessionData:
    """Items 1..n-1 follow the cycle i → i+1 (wrapping); item n never appears in training."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - 1, size=sessions)
    train = [np.array([(s + k) % (n - 1) + 1 for k in range(5)]) for s in starts]
    feats = ItemFeatures({"category": torch.zeros(n + 1, dtype=torch.long)})
    return SessionData([f"i{i}" for i in range(n)], feats, {"category": 2}, {"train": train, "validation": [], "test": []})


def test_only_training_items_get_an_embedding_row():
    m = SASRec(SASRecConfig(catalogue_size=6, hidden=8, heads=2), train_items=torch.tensor([1, 3, 3, 4]))
    assert m.scorable().tolist() == [False, True, False, True, True, False]
    assert m.embedding_bytes() == 4 * 8 * 4                      # 3 items + the padding row, fp32
    assert torch.equal(m.item_repr(torch.tensor([2, 5])), torch.zeros(2, 8))


def test_padding_content_does_not_change_the_session_representation():
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(catalogue_size=6, hidden=8, heads=2, dropout=0.0), torch.arange(1, 6)).eval()
    a = m(torch.tensor([[1, 2, 3, 0, 0]]), torch.tensor([3]))[0]
    b = m(torch.tensor([[1, 2, 3, 5, 4]]), torch.tensor([3]))[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_learns_a_deterministic_next_item():
    data = cycle_world()
    cfg = TrainConfig(model=ModelConfig(name="sasrec", hidden=16, layers=1, heads=2, dropout=0.0, max_length=6,
                                        softmax="full"), epochs=6, batch_size=64, dense_learning_rate=1e-2, device="cpu")
    model = build_model(cfg.model, data)
    train_session_model(model, data, cfg, seed=0)
    model.eval()
    prefixes = torch.tensor([[i, i % 11 + 1] for i in range(1, 12)])
    with torch.no_grad():
        scores = model(prefixes, torch.full((11,), 2))[0] @ model.encode_catalogue().T
    scores[:, ~model.scorable()] = -torch.inf
    expected = [(i % 11 + 1) % 11 + 1 for i in range(1, 12)]
    assert scores.argmax(1).tolist() == expected


def chain_world(n: int = 50, sessions: int = 300, length: int = 10, seed: int = 0) -> tuple[SessionData, dict[int, int]]:
    """Sessions that follow a fixed random permutation of n items (item i is always followed by next[i])."""
    rng = np.random.default_rng(seed)
    nxt = {i + 1: int(p) + 1 for i, p in enumerate(rng.permutation(n))}
    train = []
    for start in rng.integers(1, n + 1, size=sessions):
        s = [int(start)]
        while len(s) < length:
            s.append(nxt[s[-1]])
        train.append(np.array(s))
    feats = ItemFeatures({"c": torch.zeros(n + 1, dtype=torch.long)})
    return SessionData([f"i{i}" for i in range(n)], feats, {"c": 2}, {"train": train, "validation": [], "test": []}), nxt


def test_recbole_settings_learn_a_planted_chain():
    """RecBole's SASRec settings (dropout 0.5, Adam 1e-3, full softmax, no clipping) learn a planted next-item chain
    on training windows. The pre-norm encoder with N(0, 1) positions counted from the window's end and items at
    std hidden^-0.5 (before #19) stayed at chance on this data (accuracy 0.06, loss 4.03 -> 3.81 over 12 epochs)."""
    data, nxt = chain_world()
    cfg = TrainConfig(model=ModelConfig(name="sasrec", hidden=32, layers=2, heads=2, dropout=0.5, max_length=10,
                                        softmax="full", train_windows=True),
                      epochs=12, batch_size=32, dense_learning_rate=1e-3, grad_clip_norm=None, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg.model, data)
    history = train_session_model(model, data, cfg, seed=0)
    model.eval()
    prefixes = torch.tensor([[i, nxt[i]] for i in range(1, 51)])
    with torch.no_grad():
        scores = model(prefixes, torch.full((50,), 2))[0] @ model.encode_catalogue().T
    scores[:, ~model.scorable()] = -torch.inf
    accuracy = (scores.argmax(1) == torch.tensor([nxt[nxt[i]] for i in range(1, 51)])).float().mean().item()
    assert accuracy >= 0.8
    assert history["loss"][-1] < 0.6 * history["loss"][0]


def test_every_window_position_is_the_prefix_that_ends_there():
    """Positions count from the session start: forward_all at t equals forward on the prefix ending at t (training on
    windows sees what evaluation sees). Positions counted from the end (before #19) broke this at every t < last."""
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(catalogue_size=8, hidden=8, heads=2, dropout=0.0, max_length=5), torch.arange(1, 8)).eval()
    items = torch.tensor([[3, 1, 4, 7, 5]])
    with torch.no_grad():
        every = m.forward_all(items, torch.tensor([5]))[0]
        for t in range(5):
            assert torch.allclose(every[t], m(items[:, :t + 1], torch.tensor([t + 1]))[0][0], atol=1e-5)


def test_layout_and_initialisation_follow_recbole():
    """RecBole's SASRec: LayerNorm + dropout on item + position embedding, post-norm layers (q/k/v/dense, gelu
    feed-forward of 4 x hidden), tied output, normal(0, 0.02) weights, LayerNorm 1/0, zero biases."""
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(catalogue_size=1001, hidden=64, layers=2, heads=2, dropout=0.5, max_length=50),
               torch.arange(1, 1001))
    per_layer = 4 * (64 * 64 + 64) + 2 * 64 + (64 * 256 + 256) + (256 * 64 + 64) + 2 * 64
    assert sum(p.numel() for p in m.parameters()) == 1001 * 64 + 50 * 64 + 2 * 64 + 2 * per_layer
    assert abs(m.items.embedding.weight[1:].std().item() - 0.02) < 1e-3
    assert abs(m.positions.weight.std().item() - 0.02) < 2e-3
    assert abs(m.encoder.blocks[0][1].dense_1.weight.std().item() - 0.02) < 1e-3
    assert m.encoder.blocks[1][0].query.bias.abs().sum().item() == 0.0
    assert torch.equal(m.norm.weight, torch.ones(64)) and torch.equal(m.norm.bias, torch.zeros(64))
    assert m.items.embedding.weight[0].abs().sum().item() == 0.0       # padding / unseen row
    assert torch.equal(m.item_repr(torch.tensor([5])), m.items.embedding.weight[5:6])  # output tied to the input table

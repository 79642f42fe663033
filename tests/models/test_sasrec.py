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

"""Logistic regression baseline: the logit is exactly bias + w·dense + the ids' weights."""

from __future__ import annotations

import pytest
import torch

from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from models.baselines import LogisticRegression


def test_logit_is_linear_in_dense_and_ids():
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=5, feature_names=["a", "b"])])
    with torch.no_grad():
        ebc.embedding_bags["t"].weight.copy_(torch.arange(20, dtype=torch.float32).reshape(5, 4) / 10)
    m = LogisticRegression(ebc, dense_in=2)
    with torch.no_grad():
        m.linear.weight.copy_(torch.tensor([[1.0, -2.0]]))
        m.linear.bias.fill_(0.5)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([1, 3, 2, 0]),
                                              lengths=torch.ones(4, dtype=torch.long))
    out = m(torch.tensor([[1.0, 1.0], [0.0, 2.0]]), kjt)
    row_w = (torch.arange(20, dtype=torch.float32).reshape(5, 4) / 10).sum(1)   # weight of id i = sum of its row
    expected = torch.tensor([0.5 + 1 - 2 + row_w[1] + row_w[2], 0.5 - 4 + row_w[3] + row_w[0]])
    assert out.tolist() == pytest.approx(expected.tolist(), abs=1e-5)

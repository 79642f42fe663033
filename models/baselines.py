"""Logistic regression for CTR: one weight per categorical id, a linear map of the dense features.

The id weights come from a pooled-embedding module whose columns are summed, so a table of any
dim (FBGEMM kernels want multiples of 4) still gives each id a single weight in effect.

A sanity baseline: it cannot model feature interactions (so it misses the planted XOR pair).

Example:
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=1,
    ...     num_embeddings=10, feature_names=["f1", "f2"])])
    >>> m = LogisticRegression(ebc, dense_in=3)
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f1", "f2"], values=torch.tensor([1, 2, 3, 4]),
    ...     lengths=torch.tensor([1, 1, 1, 1]))
    >>> m(torch.rand(2, 3), kjt).shape
    torch.Size([2])
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class LogisticRegression(nn.Module):
    """logit = bias + w·dense + Σ_features Σ_columns emb[id]; linear in the one-hot ids."""

    def __init__(self, sparse: nn.Module, dense_in: int) -> None:
        super().__init__()
        self.sparse = sparse
        self.dense_in = dense_in
        self.linear = nn.Linear(max(dense_in, 1), 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Logits of shape (B,)."""
        pooled = self.sparse(sparse).values()
        if self.dense_in == 0:
            dense = torch.zeros(pooled.shape[0], 1, device=pooled.device, dtype=pooled.dtype)
        return self.linear(dense).squeeze(-1) + pooled.sum(dim=1)

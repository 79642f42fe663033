"""DCN-v2: dense MLP, a low-rank cross network over [dense, embeddings], over MLP (one logit).

Uses TorchRec's `LowRankCrossNet` inside its `InteractionDCNArch`.

Example:
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4,
    ...     num_embeddings=10, feature_names=["f1", "f2"])])
    >>> m = DCNv2(ebc, num_features=2, embedding_dim=4, dense_in=3, dense_arch=[8], over_arch=[8],
    ...           cross_layers=2, low_rank=2)
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f1", "f2"], values=torch.tensor([1, 2, 3, 4]),
    ...     lengths=torch.tensor([1, 1, 1, 1]))
    >>> m(torch.rand(2, 3), kjt).shape
    torch.Size([2])
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionDCNArch, OverArch
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class DCNv2(nn.Module):
    """DCN-v2 (low-rank cross layers) over a pooled-embedding module of F features of one dim."""

    def __init__(self, sparse: nn.Module, num_features: int, embedding_dim: int, dense_in: int,
                 dense_arch: list[int], over_arch: list[int], cross_layers: int, low_rank: int) -> None:
        super().__init__()
        self.sparse = sparse
        self.num_features = num_features
        self.embedding_dim = embedding_dim
        self.dense_in = dense_in
        self.dense_arch = DenseArch(max(dense_in, 1), [*dense_arch, embedding_dim])
        width = (num_features + 1) * embedding_dim
        self.inter_arch = InteractionDCNArch(
            num_features, LowRankCrossNet(in_features=width, num_layers=cross_layers, low_rank=low_rank))
        self.over_arch = OverArch(width, [*over_arch, 1])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Logits of shape (B,)."""
        pooled = self.sparse(sparse).values()
        if self.dense_in == 0:
            dense = torch.ones(pooled.shape[0], 1, device=pooled.device, dtype=pooled.dtype)
        d = self.dense_arch(dense)
        s = pooled.reshape(pooled.shape[0], self.num_features, self.embedding_dim)
        return self.over_arch(self.inter_arch(d, s)).squeeze(-1)

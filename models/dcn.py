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

from torch import nn
from torchrec.models.dlrm import InteractionDCNArch
from torchrec.modules.crossnet import LowRankCrossNet

from models.dlrm import DLRM


class DCNv2(DLRM):
    """DCN-v2 (low-rank cross layers) over a pooled-embedding module of F features of one dim.

    The same dense / over arches and forward as `DLRM`; only the interaction differs.
    """

    def __init__(self, sparse: nn.Module, num_features: int, embedding_dim: int, dense_in: int,
                 dense_arch: list[int], over_arch: list[int], cross_layers: int, low_rank: int,
                 over_dropout: float = 0.0) -> None:
        self._cross = (cross_layers, low_rank)  # read by _interaction during DLRM.__init__
        super().__init__(sparse, num_features, embedding_dim, dense_in, dense_arch, over_arch, over_dropout=over_dropout)

    def _interaction(self, num_features: int, embedding_dim: int) -> tuple[nn.Module, int]:
        width = (num_features + 1) * embedding_dim
        layers, rank = self._cross
        return InteractionDCNArch(num_features, LowRankCrossNet(in_features=width, num_layers=layers, low_rank=rank)), width

"""DLRM: dense MLP, pairwise dot interaction with the pooled embeddings, over MLP (one logit).

Built on TorchRec's own `DenseArch`, `InteractionArch` and `OverArch`; the sparse part is any
module mapping a KeyedJaggedTensor to a KeyedTensor of pooled embeddings (a TorchRec
`EmbeddingBagCollection`, or the plan's `PlanEmbeddings`), so DMP can shard it.

Example:
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4,
    ...     num_embeddings=10, feature_names=["f1", "f2"])])
    >>> m = DLRM(ebc, num_features=2, embedding_dim=4, dense_in=3, dense_arch=[8], over_arch=[8])
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f1", "f2"], values=torch.tensor([1, 2, 3, 4]),
    ...     lengths=torch.tensor([1, 1, 1, 1]))
    >>> m(torch.rand(2, 3), kjt).shape
    torch.Size([2])
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class DLRM(nn.Module):
    """DLRM over a pooled-embedding module whose F features all have dimension `embedding_dim`.

    `dense_arch` / `over_arch` are the hidden sizes; the last dense layer (`embedding_dim`) and the
    single output logit are added here. With `dense_in == 0` a constant input of 1 stands in.
    `concat_embeddings` also feeds the pooled embeddings themselves to the over arch beside the
    pairwise dots (first-order terms, as DCN's input and the DLRM paper's "concat" option have):
    on the real Criteo sample it lifted test AUC 0.7335 -> 0.7403 (seed 0, same rows), where the
    dot-only form trailed a one-hot logistic regression. `over_dropout`: dropout on the over arch's input
    in training.
    """

    def __init__(self, sparse: nn.Module, num_features: int, embedding_dim: int, dense_in: int,
                 dense_arch: list[int], over_arch: list[int], concat_embeddings: bool = False,
                 over_dropout: float = 0.0) -> None:
        super().__init__()
        self.concat_embeddings = concat_embeddings
        self.sparse = sparse
        self.num_features = num_features
        self.embedding_dim = embedding_dim
        self.dense_in = dense_in
        self.dense_arch = DenseArch(max(dense_in, 1), [*dense_arch, embedding_dim])
        self.inter_arch, over_in = self._interaction(num_features, embedding_dim)
        if concat_embeddings:
            over_in += num_features * embedding_dim
        self.over_dropout = nn.Dropout(over_dropout)
        self.over_arch = OverArch(over_in, [*over_arch, 1])

    def _interaction(self, num_features: int, embedding_dim: int) -> tuple[nn.Module, int]:
        """The feature-interaction module and its output width (DLRM: pairwise dot products)."""
        return InteractionArch(num_sparse_features=num_features), embedding_dim + num_features * (num_features + 1) // 2

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Logits of shape (B,)."""
        pooled = self.sparse(sparse).values()
        if self.dense_in == 0:
            dense = torch.ones(pooled.shape[0], 1, device=pooled.device, dtype=pooled.dtype)
        d = self.dense_arch(dense)
        s = pooled.reshape(pooled.shape[0], self.num_features, self.embedding_dim)
        x = self.inter_arch(d, s)
        if self.concat_embeddings:
            x = torch.cat([x, pooled], dim=1)
        return self.over_arch(self.over_dropout(x)).squeeze(-1)

"""SASRec as RecBole implements it: item-ID embeddings, causal self-attention, last real position → next item.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), in RecBole's form
(`recbole/model/sequential_recommender/sasrec.py`, SASRec.yaml): positions counted from the start of
the (right-padded) session, LayerNorm then dropout on item + position embedding, a post-norm
transformer with gelu feed-forward of size `inner` (`models/sasrec_encoder.py`), the hidden state at
the last real position as the session representation, scored by dot product against the same item
embedding table (tied output). Every Linear and Embedding starts normal(0, `initializer_range`), every
LayerNorm at weight 1 / bias 0, Linear biases 0. It shares the training loop and evaluation of
M2TRec; it has one embedding row per training item and cannot score items never seen in training
(see `models/item_id_table.py`).

Because positions count from the start, the state at position t of a window (`forward_all`) is the
state `forward` gives for the prefix ending at t: training on windows (`pipelines/sessions/windows.py`)
sees exactly the inputs evaluation sees.

Example:
    >>> m = SASRec(SASRecConfig(catalogue_size=6, hidden=8, heads=2), train_items=torch.tensor([1, 2, 3]))
    >>> rep, tasks = m(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    >>> rep.shape, tasks
    (torch.Size([1, 8]), {})
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.item_id_table import ItemIdScoring, ItemIdTable
from models.sasrec_encoder import RecBoleTransformer


@dataclass
class SASRecConfig:
    """RecBole's SASRec.yaml defaults except `dropout` (hidden and attention dropout; RecBole 0.5)."""

    catalogue_size: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    max_length: int = 50
    inner: int = 0              # feed-forward size; 0 = 4 * hidden (RecBole: inner_size 256 for hidden 64)
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12


class SASRec(ItemIdScoring, nn.Module):
    """Session → hidden state at its last real position, scored against the item-ID table."""

    def __init__(self, config: SASRecConfig, train_items: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.items = ItemIdTable(config.catalogue_size, train_items, h)
        self.positions = nn.Embedding(config.max_length, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = RecBoleTransformer(h, config.layers, config.heads, config.inner or 4 * h, config.dropout,
                                          config.dropout, config.layer_norm_eps)
        self.apply(self._init_weights)
        if self.items.plan is None:
            with torch.no_grad():
                self.items.embedding.weight[0].zero_()   # the padding / unseen row stays zero (ItemIdTable)

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's SASRec._init_weights: Linear/Embedding normal(0, initializer_range), LayerNorm 1/0, biases 0."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward_all(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The hidden state after every position [B, L, H] (causal: position t sees items <= t)."""
        length = items.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"sessions of {length} items; SASRec was built for max_length {self.config.max_length}")
        ar = torch.arange(length, device=items.device)
        x = self.dropout(self.norm(self.items(items) + self.positions(ar)[None]))
        return self.encoder(x, ar[None, :] < lengths[:, None])

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.forward_all(items, lengths)
        return h[torch.arange(items.shape[0], device=items.device), (lengths - 1).clamp(min=0)], {}

"""SASRec-style baseline: item-ID embeddings, causal self-attention, last position → next item.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018). It shares the training
loop and evaluation of M2TRec; it has one embedding row per training item and cannot score items
never seen in training (see `models/item_id_table.py`).

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
from models.session_encoder import SessionTransformer


@dataclass
class SASRecConfig:
    catalogue_size: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    max_length: int = 50


class SASRec(ItemIdScoring, nn.Module):
    """Session → representation scored against the item-ID table."""

    def __init__(self, config: SASRecConfig, train_items: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.items = ItemIdTable(config.catalogue_size, train_items, config.hidden)
        self.encoder = SessionTransformer(config.hidden, config.layers, config.heads, config.dropout,
                                          config.max_length, causal=True, pooling="last")

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.encoder(self.items(items), lengths), {}

    def forward_all(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The representation after every position [B, L, H] (causal: position t sees items <= t)."""
        return self.encoder.forward_all(self.items(items), lengths)

"""GRU4Rec-style baseline: item-ID embeddings, a GRU over the session, last hidden state → next item.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks" (ICLR 2016). Same
training loop and evaluation as M2TRec; one embedding row per training item, so items never
seen in training cannot be scored (see `models/item_id_table.py`).

Example:
    >>> m = GRU4Rec(GRU4RecConfig(catalogue_size=6, hidden=8), train_items=torch.tensor([1, 2, 3]))
    >>> m(torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor([2, 1]))[0].shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.item_id_table import ItemIdScoring, ItemIdTable


@dataclass
class GRU4RecConfig:
    catalogue_size: int
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.1


class GRU4Rec(ItemIdScoring, nn.Module):
    """Session → last GRU state, projected, scored against the item-ID table."""

    def __init__(self, config: GRU4RecConfig, train_items: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.items = ItemIdTable(config.catalogue_size, train_items, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.hidden, config.hidden, num_layers=config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)
        self.out = nn.Linear(config.hidden, config.hidden)

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.dropout(self.items(items))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(h[-1]), {}

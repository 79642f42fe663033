"""The item-ID embedding table of the ID-based baselines (SASRec, GRU4Rec).

Only items seen in training get a row (row 0 = padding / unknown, kept at zero). `row_of`
maps a catalogue index to its row; an item never seen in training maps to row 0, so inside a
session it contributes nothing and as a candidate it cannot be scored (`scorable()` is False:
the evaluation ranks it after every scorable item, ties broken at random).

Example:
    >>> t = ItemIdTable(catalogue_size=5, train_items=torch.tensor([2, 4]), dim=3)
    >>> t.row_of.tolist(), t.scorable().tolist()
    ([0, 0, 1, 0, 2], [False, False, True, False, True])
"""

from __future__ import annotations

import torch
from torch import nn


class ItemIdTable(nn.Module):
    """One embedding row per training item; unseen items share the zero row 0."""

    def __init__(self, catalogue_size: int, train_items: torch.Tensor, dim: int) -> None:
        super().__init__()
        row_of = torch.zeros(catalogue_size, dtype=torch.long)
        train_items = torch.unique(train_items[train_items > 0])
        row_of[train_items] = torch.arange(1, train_items.numel() + 1)
        self.register_buffer("row_of", row_of)
        self.embedding = nn.Embedding(train_items.numel() + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.row_of[idx])

    def scorable(self) -> torch.Tensor:
        return (self.row_of > 0).cpu()

    def embedding_bytes(self) -> int:
        w = self.embedding.weight
        return w.numel() * w.element_size()


class ItemIdScoring:
    """The catalogue side of an item-ID session model (SASRec, GRU4Rec): everything goes through `self.items`.

    A model mixes this in, sets `self.items` (an `ItemIdTable`) and `self.config.catalogue_size`, and
    writes only its own `forward`.
    """

    items: ItemIdTable

    def item_repr(self, idx: torch.Tensor) -> torch.Tensor:
        return self.items(idx)

    @torch.no_grad()
    def encode_catalogue(self, chunk_size: int = 4096) -> torch.Tensor:
        return self.items(torch.arange(self.config.catalogue_size, device=self.items.row_of.device))

    def scorable(self) -> torch.Tensor:
        return self.items.scorable()

    def embedding_bytes(self) -> int:
        return self.items.embedding_bytes()

"""The item-ID embedding table of the ID-based session models (SASRec, GRU4Rec) and of hybrid M2TRec.

Only items seen in training get a row (row 0 = padding / unknown, kept at zero). `row_of`
maps a catalogue index to its row; an item never seen in training maps to row 0, so inside a
session it contributes nothing and as a candidate it cannot be scored (`scorable()` is False:
the evaluation ranks it after every scorable item, ties broken at random).

`method="dense"` stores one fp32 row per training item (`nn.Embedding`); any other method of the
embedding plan (`hashing` with `{"buckets": B}`, `qr` with `{"m": M}`, `fp16`, `int8`, `int4`;
see `embeddings/compression/`) builds the table as a one-table `EmbeddingPlan` through
`PlanEmbeddings` (TorchRec/FBGEMM), so the item-ID table is compressed like any other table.

Example:
    >>> t = ItemIdTable(catalogue_size=5, train_items=torch.tensor([2, 4]), dim=3)
    >>> t.row_of.tolist(), t.scorable().tolist()
    ([0, 0, 1, 0, 2], [False, False, True, False, True])
    >>> q = ItemIdTable(5, torch.tensor([2, 4]), dim=3, method="hashing", params={"buckets": 2})
    >>> q(torch.tensor([0, 2])).abs().sum(1).gt(0).tolist()
    [False, True]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ITEM_ID_FEATURE = "item_id"


class ItemIdTable(nn.Module):
    """One embedding row per training item (dense or compressed by a plan method); unseen items share the zero row 0."""

    def __init__(self, catalogue_size: int, train_items: torch.Tensor, dim: int, method: str = "dense",
                 params: dict[str, Any] | None = None) -> None:
        super().__init__()
        row_of = torch.zeros(catalogue_size, dtype=torch.long)
        train_items = torch.unique(train_items[train_items > 0])
        row_of[train_items] = torch.arange(1, train_items.numel() + 1)
        self.register_buffer("row_of", row_of)
        self.method = method
        rows = train_items.numel() + 1
        if method == "dense":
            self.embedding = nn.Embedding(rows, dim, padding_idx=0)
            nn.init.normal_(self.embedding.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
            self.plan = None
        else:
            from embeddings.compression import get_method
            from embeddings.spec import EmbeddingPlan, TableSpec
            from embeddings.tables import PlanEmbeddings

            spec = TableSpec(name="t_item_id", features=[ITEM_ID_FEATURE], rows=rows, dim=dim, method=method,
                             params=dict(params or {}))
            spec.bytes = int(get_method(method).table_bytes(rows, dim, spec.params))
            self.plan = PlanEmbeddings(EmbeddingPlan(tables=[spec]))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows of catalogue items `idx` (any shape) → [*idx.shape, dim]; exactly zero for unseen items."""
        rows = self.row_of[idx]
        if self.plan is None:
            out = self.embedding(rows)
        else:
            from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

            flat = rows.reshape(-1)
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=[ITEM_ID_FEATURE], values=flat, lengths=torch.ones_like(flat))
            out = self.plan(kjt).values().reshape(*rows.shape, -1)
        return out * (rows > 0).unsqueeze(-1).to(out.dtype)  # row 0 (padding, unseen items) stays zero

    def scorable(self) -> torch.Tensor:
        return (self.row_of > 0).cpu()

    def embedding_bytes(self) -> int:
        if self.plan is None:
            w = self.embedding.weight
            return w.numel() * w.element_size()
        return int(self.plan.plan.total_bytes)


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

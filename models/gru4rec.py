"""GRU4Rec: item-ID embeddings, a GRU over the session, last step projected back to the embedding space → next item.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks" (ICLR 2016), in the
form RecBole evaluates it (Tan et al., DLRS 2016: every prefix is a training example): embedding 64,
GRU hidden 128, one layer without biases, dropout 0.3 on the input embeddings, a dense layer from
the GRU state back to the embedding size, scored by dot product against the item table (trained
with full softmax cross-entropy over the catalogue, `softmax: full`). Embeddings start
Xavier-normal and the GRU weights Xavier-uniform, as there. Same training loop and evaluation as
M2TRec; one embedding row per training item, so items never seen in training cannot be scored
(see `models/item_id_table.py`).

Example:
    >>> m = GRU4Rec(GRU4RecConfig(catalogue_size=6, embedding=8, hidden=16), train_items=torch.tensor([1, 2, 3]))
    >>> m(torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor([2, 1]))[0].shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.item_id_table import ItemIdScoring, ItemIdTable


@dataclass
class GRU4RecConfig:
    """`embedding`: item-embedding size (also the scoring space); `hidden`: GRU state size."""

    catalogue_size: int
    embedding: int = 64
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.3
    bias: bool = False


class GRU4Rec(ItemIdScoring, nn.Module):
    """Session → last GRU state, projected to the embedding size, scored against the item-ID table."""

    def __init__(self, config: GRU4RecConfig, train_items: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.items = ItemIdTable(config.catalogue_size, train_items, config.embedding)
        with torch.no_grad():
            nn.init.xavier_normal_(self.items.embedding.weight)
            self.items.embedding.weight[0].zero_()
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding, config.hidden, num_layers=config.layers, batch_first=True,
                          bias=config.bias, dropout=config.dropout if config.layers > 1 else 0.0)
        for name, w in self.gru.named_parameters():
            if name.startswith("weight_"):
                nn.init.xavier_uniform_(w)
        self.out = nn.Linear(config.hidden, config.embedding)

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.dropout(self.items(items))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(h[-1]), {}

    def forward_all(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The representation after every position [B, L, embedding] (a left-to-right model: position t sees items <= t)."""
        x = self.dropout(self.items(items))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=items.shape[1])
        return self.out(out)

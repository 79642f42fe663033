"""The sequence part shared by the transformer session models: positions, encoder, pooling.

Sessions arrive right-padded ([B, L] with `lengths`). Bidirectional encoders count positions from
the end of the session (the last item is position 0), so "the latest items" mean the same thing in
short and long sessions. `causal=True` gives left-to-right attention (causal M2TRec; SASRec has its
own RecBole-style encoder, `models/sasrec_encoder.py`); with `pooling="last"` positions then count
from the start, as in SASRec, so the state at position t of a training window (`forward_all`) is
exactly the state of the prefix ending at t that evaluation computes (counted from the end, position
t of a window carried the id `length - 1 - t` in training but 0 when that prefix was evaluated).

Example:
    >>> enc = SessionTransformer(hidden=8, layers=1, heads=2, dropout=0.0, max_length=5)
    >>> enc(torch.randn(3, 4, 8), torch.tensor([4, 2, 1])).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class SessionTransformer(nn.Module):
    """Item embeddings [B, L, H] + lengths → session representation [B, H]."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, max_length: int,
                 causal: bool = False, pooling: Literal["mean", "last"] = "mean") -> None:
        super().__init__()
        self.causal, self.pooling = causal, pooling
        self.positions = nn.Embedding(max_length, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, hidden)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised encoder output [B, L, H] and the padding mask [B, L]."""
        _, length, _ = x.shape
        ar = torch.arange(length, device=x.device)
        pad = ar[None, :] >= lengths[:, None]
        if self.causal and self.pooling == "last":   # from the start: window position t = the prefix ending at t
            pos = ar[None, :].clamp(max=self.positions.num_embeddings - 1).expand(x.shape[0], -1)
        else:
            pos = (lengths[:, None] - 1 - ar[None, :]).clamp(min=0, max=self.positions.num_embeddings - 1)
        h = self.dropout(x + self.positions(pos))
        mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
        return self.norm(self.encoder(h, mask=mask, src_key_padding_mask=pad, is_causal=self.causal)), pad

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, pad = self._encode(x, lengths)
        if self.pooling == "mean":
            h = h.masked_fill(pad[..., None], 0.0).sum(1) / lengths.clamp(min=1)[:, None].to(h.dtype)
        else:
            h = h[torch.arange(x.shape[0], device=x.device), (lengths - 1).clamp(min=0)]
        return self.out(h)

    def forward_all(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The representation at every position [B, L, H] (causal + last pooling: position t is the prefix ending there)."""
        if not self.causal or self.pooling != "last":
            raise ValueError("forward_all needs a causal encoder with last-position pooling")
        return self.out(self._encode(x, lengths)[0])

"""SASRec's transformer as RecBole builds it (`recbole/model/layers.py` TransformerEncoder, BERT-style post-norm).

Each layer: multi-head self-attention (query/key/value projections, scores / sqrt(head size) plus an additive
-10000 mask, softmax, attention dropout, output projection, hidden dropout, LayerNorm of input + output), then a
feed-forward block (Linear hidden → inner, gelu, Linear inner → hidden, hidden dropout, LayerNorm of input +
output). LayerNorm eps 1e-12 as RecBole's SASRec.yaml. The mask lets position i attend to real positions j <= i.

Example:
    >>> enc = RecBoleTransformer(hidden=8, layers=1, heads=2, inner=16, dropout=0.0, attn_dropout=0.0)
    >>> enc(torch.randn(2, 3, 8), torch.tensor([[True, True, False], [True, True, True]])).shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """RecBole's MultiHeadAttention: attention, projection, dropout, residual LayerNorm."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float, eps: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads, self.size = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape
        split = lambda t: t.view(b, length, self.heads, self.size).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size) + additive_mask
        context = (self.attn_dropout(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, length, hidden)
        return self.norm(self.out_dropout(self.dense(context)) + x)


class FeedForward(nn.Module):
    """RecBole's FeedForward: Linear, gelu, Linear, dropout, residual LayerNorm."""

    def __init__(self, hidden: int, inner: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense_1, self.dense_2 = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.dense_2(F.gelu(self.dense_1(x)))) + x)


class RecBoleTransformer(nn.Module):
    """`layers` × (self-attention, feed-forward); input [B, L, H] and `allowed` [B, L, L] or [B, L] (real keys)."""

    def __init__(self, hidden: int, layers: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleList([SelfAttention(hidden, heads, dropout, attn_dropout, eps),
                                                   FeedForward(hidden, inner, dropout, eps)]) for _ in range(layers))

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """`real` [B, L]: True at real (non-padding) positions; attention is left to right over real keys."""
        length = x.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, :, :] & real[:, None, :]                       # [B, query, key]
        additive = (1.0 - allowed.to(x.dtype))[:, None] * -10000.0            # RecBole's extended attention mask
        for attention, ffn in self.blocks:
            x = ffn(attention(x, additive))
        return x

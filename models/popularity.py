"""Popularity baseline: every session gets the same ranking, by training-set item counts.

Written in the shape of the other session models (a session representation scored against
catalogue embeddings) so the same evaluation code runs it: the representation is the constant
1 and each item's "embedding" is log(1 + its training count). Items never seen in training
score 0, i.e. they tie at the bottom and are ordered at random by the evaluation.

Example:
    >>> m = Popularity(counts=torch.tensor([0, 5, 1, 0]))
    >>> (m(torch.tensor([[1, 2]]), torch.tensor([2]))[0] @ m.encode_catalogue().T).argmax().item()
    1
"""

from __future__ import annotations

import torch
from torch import nn


class Popularity(nn.Module):
    """Scores = log1p(training count) of each catalogue item, whatever the session."""

    def __init__(self, counts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("counts", counts.to(torch.float32))

    def item_repr(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.counts[idx])[:, None]

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.ones(items.shape[0], 1, device=items.device), {}

    @torch.no_grad()
    def encode_catalogue(self, chunk_size: int = 4096) -> torch.Tensor:
        return self.item_repr(torch.arange(self.counts.numel(), device=self.counts.device))

    def scorable(self) -> torch.Tensor:
        ok = torch.ones(self.counts.numel(), dtype=torch.bool)
        ok[0] = False
        return ok

    def embedding_bytes(self) -> int:
        return self.counts.numel() * self.counts.element_size()

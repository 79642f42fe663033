"""Hybrid M2TRec that is never worse than metadata-only M2TRec on cold items: cold items keep the metadata-only ranks.

The hybrid (item-ID rows gated onto the metadata encoding, `models/m2trec.py`) ranks warm items
better, but its metadata path is trained beside the ID rows, so on its own it ranks cold items
(no ID row) differently from a metadata-only M2TRec, and on Amazon Toys worse (cold NDCG@20 0.95x
even with a tuned `cold_offset`). `ColdRankHybrid` holds both trained models and merges their
rankings per session: every cold item takes exactly the position the metadata-only model gives
it; the warm items fill the remaining positions in the hybrid's order (`merge_ranks`). So the rank
of a cold target, and every cold-slice metric, equals the metadata-only model's (same tie rule);
warm targets are ranked by the hybrid, pushed down only by the cold items the metadata-only model
ranks above them.

Example:
    >>> hybrid = torch.tensor([[0.9, 0.1, 5.0, 0.3]])    # warm items 0, 1, 3 by the hybrid: 0, 3, 1
    >>> meta = torch.tensor([[0.2, 0.1, 0.5, 0.0]])      # the metadata-only order: 2, 0, 1, 3
    >>> (-merge_ranks(hybrid, meta, torch.tensor([False, False, True, False]))).argsort(1).tolist()
    [[2, 0, 3, 1]]
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def merge_ranks(hybrid: torch.Tensor, metadata: torch.Tensor, cold: torch.Tensor,
                tie_priority: torch.Tensor | None = None) -> torch.Tensor:
    """Scores [B, N] (higher first, all distinct) of the merged ranking: item i of `cold` [N] (bool) at its position in
    the descending order of `metadata` [B, N], the other items in the order of `hybrid` [B, N] in the positions left.

    Ties in `metadata` are ordered by `tie_priority` [N] (lower first; as `ranks_from_scores` breaks them), so a cold
    item's merged rank equals its rank among the metadata scores exactly."""
    b, n = metadata.shape
    perm = torch.argsort(tie_priority) if tie_priority is not None else torch.arange(n, device=metadata.device)
    meta_order = perm[torch.argsort(-metadata[:, perm], dim=1, stable=True)]          # [B, N] items by metadata rank
    position = torch.arange(n, device=metadata.device).expand(b, n)
    cold_at = cold[meta_order]                                                        # [B, N] is position p cold?
    n_warm = int((~cold).sum())
    free = torch.sort(torch.where(cold_at, n, position), dim=1).values[:, :n_warm]   # positions left to warm items
    warm_order = torch.argsort(-hybrid.masked_fill(cold[None, :], -torch.inf), dim=1, stable=True)[:, :n_warm]
    final = torch.empty(b, n, dtype=torch.long, device=metadata.device)
    final.scatter_(1, meta_order, position)                                           # cold items: metadata position
    final.scatter_(1, warm_order, free)                                               # warm items: the free positions
    return -final.to(torch.float32)


class ColdRankHybrid(nn.Module):
    """A trained hybrid M2TRec and a trained metadata-only M2TRec ranked together (`merge_ranks`).

    Task heads, `encode_catalogue` and `forward` are the hybrid's; `scorer` gives the merged scores.
    """

    def __init__(self, hybrid: nn.Module, metadata: nn.Module) -> None:
        super().__init__()
        if getattr(hybrid, "ids", None) is None or getattr(metadata, "ids", None) is not None:
            raise ValueError("ColdRankHybrid needs a hybrid M2TRec (item_ids on) and a metadata-only M2TRec (item_ids off)")
        self.hybrid, self.metadata = hybrid, metadata
        self.config = hybrid.config
        self.catalogue = hybrid.catalogue

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.hybrid(items, lengths)

    def cold(self) -> torch.Tensor:
        """Items without an ID row [N+1] (row 0, padding, excluded)."""
        cold = self.hybrid.ids.row_of == 0
        cold[0] = False
        return cold

    @torch.no_grad()
    def scorer(self, chunk_size: int = 4096) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
        """(items, lengths, tie priority) → merged scores [B, N+1]; both catalogues encoded once."""
        hybrid_cat = self.hybrid.encode_catalogue(chunk_size)
        meta_cat = self.metadata.encode_catalogue(chunk_size)
        cold = self.cold()

        def scores(items: torch.Tensor, lengths: torch.Tensor, tie_priority: torch.Tensor | None = None) -> torch.Tensor:
            h = self.hybrid(items, lengths)[0] @ hybrid_cat.T
            m = self.metadata(items, lengths)[0] @ meta_cat.T
            h[:, 0] = m[:, 0] = -torch.inf          # padding: last in both orders
            return merge_ranks(h, m, cold, tie_priority)

        return scores

    @torch.no_grad()
    def encode_catalogue(self, chunk_size: int = 4096) -> torch.Tensor:
        return self.hybrid.encode_catalogue(chunk_size)

    def scorable(self) -> torch.Tensor:
        return self.hybrid.scorable()

    def embedding_bytes(self) -> int:
        return int(self.hybrid.embedding_bytes() + self.metadata.embedding_bytes())

"""Keeping inactive weights at zero after a step, and what a prune/grow update changes.

- `unique_rows` / `remask_rows`: the rows of multi-id bags are multiplied by their mask rows after
  the optimizer step, in cache-sized chunks;
- `Changes`: the weights one update moved in one table, where to zero weights and element-wise
  optimizer state, and which rows lost every surviving weight (their row-wise state is reset);
- `is_distributed` / `gather_rows`: the collectives a multi-rank run needs.

Example:
    >>> import torch
    >>> any_per_row(torch.tensor([[False, True], [False, False]])).tolist()
    [True, False]
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from embeddings.dsl.hooks import TableLookup


# Re-masking on CPU goes through the touched rows in chunks of about this many bytes: the gathered
# rows stay in cache until they are written back (about 2x faster than one gather of all rows).
_REMASK_CHUNK_BYTES = 1 << 19


def unique_rows(parts: list[TableLookup], mask: Tensor) -> Tensor:
    """The rows a step must re-mask (the ids of bags with more than one id), sorted: the hook's
    unique rows when it ran and they are the same set, else the ids made unique,
    through a row bitmap when the table is not much larger than the batch (a scan of the bitmap is
    then cheaper than sorting the ids). On CUDA the repeated ids themselves: re-masking a row twice
    writes the same values and avoids the host sync of `unique`."""
    parts = [p for p in parts if p.remask.numel()]
    if not parts:
        return torch.zeros(0, dtype=torch.long, device=mask.device)
    if len(parts) == 1 and parts[0].rows is not None:
        return parts[0].rows.long()
    ids = torch.cat([p.rows if p.rows is not None else p.remask for p in parts])
    if ids.is_cuda:
        return ids.long()
    if mask.shape[0] > 8 * ids.numel():
        return torch.unique(ids).long()
    seen = torch.zeros(mask.shape[0], dtype=torch.bool)
    seen.index_fill_(0, ids.long(), True)
    return seen.nonzero().squeeze(1)



def remask_rows(shard, mask: Tensor, rows: Tensor) -> None:
    """Multiply the given rows (table row numbers) of one shard by their mask."""
    r, c = shard.tensor.shape
    if shard.row_offset or r != mask.shape[0]:
        rows = rows[(rows >= shard.row_offset) & (rows < shard.row_offset + r)]
    whole_cols = shard.col_offset == 0 and c == mask.shape[1]
    chunk = rows.numel() if rows.is_cuda else max(1, _REMASK_CHUNK_BYTES // max(1, c * shard.tensor.element_size()))
    for part in rows.split(chunk) if rows.numel() else ():
        m = mask.index_select(0, part)
        if not whole_cols:
            m = m[:, shard.col_offset:shard.col_offset + c]
        local = part - shard.row_offset if shard.row_offset else part
        # bool -> uint8 -> the table's dtype, then a same-dtype multiply (the vectorised path)
        shard.tensor.index_copy_(0, local, shard.tensor.index_select(0, local).mul_(m.view(torch.uint8).to(shard.tensor.dtype)))



class Changes:
    """The weights one update moved in one table (flat positions, `mask` already the new mask), and
    what follows for a shard: where to zero weights and element-wise state, which rows lost every
    surviving weight. Table-sized bitmaps are built only when a shard or a row-wise state needs them."""

    def __init__(self, mask: Tensor, pruned: Tensor, grown: Tensor, scratch: Tensor | None = None) -> None:
        self.mask, self.pruned, self.grown = mask, pruned, grown
        self._changed: Tensor | None = None
        self._kept: Tensor | None = None
        # two table-sized bool bitmaps carved out of a dead buffer (a fresh 64 MB tensor costs more
        # in page faults than the work done on it); fresh tensors when there is none big enough
        self._spare: list[Tensor] = []
        n = mask.numel()
        if scratch is not None and scratch.is_contiguous() and scratch.device == mask.device \
                and scratch.numel() * scratch.element_size() >= 2 * n:
            flat = scratch.view(-1).view(torch.uint8)[:2 * n].view(torch.bool)
            self._spare = [flat[n:].view(mask.shape), flat[:n].view(mask.shape)]

    def _bitmap(self) -> Tensor:
        return self._spare.pop().zero_() if self._spare else torch.zeros_like(self.mask)

    def _whole(self, shard) -> bool:
        return tuple(shard.tensor.shape) == tuple(self.mask.shape)

    def changed(self) -> Tensor:
        if self._changed is None:
            bm = self._bitmap()
            bm.view(-1).index_fill_(0, self.pruned, True).index_fill_(0, self.grown, True)
            self._changed = bm
        return self._changed

    def zero(self, tensor: Tensor, shard) -> None:
        """Zero the entries of `tensor` (shaped like `shard`) at the pruned and grown weights."""
        if self._whole(shard) and tensor.is_contiguous():
            tensor.view(-1).index_fill_(0, self.pruned, 0).index_fill_(0, self.grown, 0)
        else:
            rs, cs = shard.full
            tensor.masked_fill_(self.changed()[rs, cs], 0)

    def rows_without_survivor(self, shard) -> Tensor:
        """Bool per shard row: a weight changed in the shard's columns and none active before the
        update is active after it (kept = new mask and not grown)."""
        if self._kept is None:
            grown = self._bitmap()
            grown.view(-1).index_fill_(0, self.grown, True)
            self._kept = grown.logical_not_().logical_and_(self.mask)
        rs, cs = shard.full
        return any_per_row(self.changed()[rs, cs]) & ~any_per_row(self._kept[rs, cs])


def any_per_row(mask: Tensor) -> Tensor:
    """`mask.any(1)` for a bool table, through wider integer views (8 flags per int64 when the row
    allows it, else uint8 max): several times faster on CPU."""
    if not mask.shape[1]:
        return mask.any(1)
    m = mask.contiguous().view(torch.uint8)
    if m.shape[1] % 8 == 0:
        return m.view(torch.int64).ne(0).any(1)
    return m.amax(1).bool()



def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(rows: Tensor) -> Tensor:
    """Rows touched on any rank (a shard on this rank is updated by every rank's batch)."""
    if not is_distributed():
        return rows
    n = torch.tensor([rows.numel()], device=rows.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.full((longest,), -1, dtype=rows.dtype, device=rows.device)
    padded[:rows.numel()] = rows
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    allrows = torch.cat(out)
    return torch.unique(allrows[allrows >= 0])


__all__ = ["unique_rows", "remask_rows", "Changes", "any_per_row", "is_distributed", "gather_rows"]

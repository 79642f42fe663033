"""DSL's per-step gradient path: which rows a batch looked up, the pooled output's gradient hook
(mask of one-id bags, per-row gradient magnitude), and the gradient mask of densely trained tables.

The gradient of the pooled output is scattered back to the rows the batch looked up, using the
KJT's ids and offsets, so no dense table-sized gradient is ever formed (FBGEMM's fused optimizer
never materialises one).

Example:
    >>> steps = sorted(sampled_steps(0, 10, 2, seed=0, interval=0))
    >>> len(steps), steps[0] < 5 <= steps[1]
    (2, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from embeddings.dsl.tables import DSLTable


@dataclass
class TableLookup:
    """One table's share of a batch: the looked-up `ids` (KJT order, repeats kept) and, per feature,
    (first column in the pooled output, dim, bag lengths, id weights or None).

    `grad_masks` are (first column, dim, per-bag mask rows) of the features whose bags hold one id:
    the hook multiplies their pooled gradient by the id's mask row, so the fused optimizer moves no
    inactive weight and those rows need no re-masking. `remask` holds the ids of bags with more
    than one id (their rows are re-masked after the step). Sorting and the bag index are computed
    only inside the hook on accumulating steps; it leaves the sorted unique `rows` behind."""

    table: str
    ids: Tensor
    features: list[tuple[int, int, Tensor, Tensor | None]]
    mean: bool
    grad_masks: list[tuple[int, int, Tensor]]
    remask: Tensor
    rows: Tensor | None = None
    seen: Tensor | None = None  # sorted unique rows whose gradient was accumulated (lazy mode's grow candidates)


@torch.no_grad()
def table_lookups(kjt, pooled, tables: Mapping[str, DSLTable], feature_table: Mapping, masks: Mapping[str, Tensor],
                  collect_remask: bool = True, grad_masks: bool = True) -> list[TableLookup]:
    """Per DSL table in the batch: its ids and where their gradients come from (cheap slicing only).
    `collect_remask=False` skips collecting the ids of multi-id bags for re-masking, `grad_masks=False`
    the one-id bags' gradient masks (lazy mode: evidence only)."""
    if not isinstance(pooled, Tensor):
        keys, dims = pooled.keys(), pooled.length_per_key()
        positions = {k: i for i, k in enumerate(kjt.keys())}
    else:  # a bare TBE: the KJT's features in order, named by position
        keys = list(range(len(kjt.keys())))
        dims = [tables[feature_table[i]].dim for i in keys]
        positions = {k: k for k in keys}
    lengths, offsets, weights, stride = kjt.lengths(), kjt.offset_per_key(), kjt.weights_or_none(), kjt.stride()
    values = kjt.values()
    parts: dict[str, tuple[list, list, list, list]] = {}
    col = 0
    for key, dim in zip(keys, dims):
        table = feature_table.get(key)
        if table is not None and key in positions:
            p = positions[key]
            lo, hi = offsets[p], offsets[p + 1]
            ids, feats, gmasks, remask = parts.setdefault(table, ([], [], [], []))
            fids, lens = values[lo:hi], lengths[p * stride:(p + 1) * stride]
            ids.append(fids)
            feats.append((col, dim, lens, weights[lo:hi] if weights is not None else None))
            if grad_masks:
                split_bags(tables[table], masks[table], col, dim, fids, lens, gmasks, remask if collect_remask else None)
        col += dim
    return [TableLookup(table, _cat(ids, ids[0]), feats, tables[table].pooling == "mean", gmasks, _cat(remask, ids[0]))
            for table, (ids, feats, gmasks, remask) in parts.items()]


def split_bags(table: DSLTable, mask: Tensor, col: int, dim: int, ids: Tensor, lens: Tensor,
               gmasks: list, remask: list | None) -> None:
    """One feature's bags: those with one id get a gradient mask (the id's mask row), the ids of
    longer bags are kept for re-masking (unless `remask` is None). A table with a dense optimizer
    re-masks all of itself.
    Deciding which bags are which reads the lengths on the host (one sync per feature on CUDA)."""
    if ids.numel() == 0:
        return
    if table.dense_param is not None:
        if remask is not None:
            remask.append(ids)
        return
    multi = lens > 1
    if not bool(multi.any()) and ids.numel() == lens.numel():  # every bag holds exactly one id
        gmasks.append((col, dim, mask.index_select(0, ids)))
        return
    if bool(multi.any()):
        if remask is not None:
            remask.append(ids[torch.repeat_interleave(multi, lens)])
        if not bool((lens == 1).any()):
            return
    # one-id bags: the mask row of their id; other bags pass their gradient whole (longer bags'
    # rows are re-masked, an empty bag's gradient reaches no row)
    first = (torch.cumsum(lens, 0) - lens).clamp_(max=ids.numel() - 1)
    rows = mask.index_select(0, ids.index_select(0, first))
    gmasks.append((col, dim, rows.logical_or_(lens.ne(1).unsqueeze(1))))


def masked_grad(grad: Tensor, lookups: list[TableLookup]) -> Tensor:
    """The pooled gradient with the inactive weights of one-id bags zeroed (a copy; `grad` itself when
    no lookup has a gradient mask)."""
    if not any(lk.grad_masks for lk in lookups):
        return grad
    grad = grad.clone()
    with torch.no_grad():
        for lk in lookups:
            for col, dim, m in lk.grad_masks:
                # bool -> uint8 -> float, then a float multiply: both vectorised on CPU (a mixed
                # float * bool or float * uint8 multiply is about 20x slower)
                grad[:, col:col + dim].mul_(m.view(torch.uint8).to(grad.dtype))
    return grad


@torch.no_grad()
def accumulate(grad: Tensor, lookups: list[TableLookup], grad_acc: Mapping[str, Tensor]) -> None:
    """Add each looked-up row's gradient magnitude of this step to its table's accumulator (sum
    pooling: the sum of its bags' gradients; mean: each divided by the bag length; weighted: times
    the id's weight), with one `embedding_bag` over the ids sorted by row."""
    for lk in lookups:
        if lk.ids.numel() == 0:
            continue
        sources, bags, scales = [], [], []
        for i, (col, dim, lens, w) in enumerate(lk.features):
            bag = torch.repeat_interleave(torch.arange(lens.numel(), device=lens.device), lens)
            scale = w.float() if w is not None else None
            if lk.mean:
                inv_len = 1.0 / lens.clamp(min=1).to(torch.float32)[bag]
                scale = inv_len if scale is None else scale * inv_len
            sources.append(grad[:, col:col + dim])
            bags.append(bag + i * lens.numel())
            scales.append(scale)
        source = (torch.cat(sources) if len(sources) > 1 else sources[0]).float().contiguous()
        bag = torch.cat(bags) if len(bags) > 1 else bags[0]
        scale = None
        if any(x is not None for x in scales):
            scale = torch.cat([x if x is not None else torch.ones(b.numel(), device=b.device)
                               for x, b in zip(scales, bags)])
        # per-row gradient of this step = the sum over the row's ids: one embedding_bag whose
        # "table" is the pooled gradient and whose bags are the ids grouped by row
        sorted_ids, order = lk.ids.sort(stable=True)
        rows, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
        offsets = counts.cumsum(0).sub_(counts)
        per_row = F.embedding_bag(bag[order], source, offsets, mode="sum",
                                  per_sample_weights=scale[order] if scale is not None else None)
        # `rows` are unique: gather, add, write back (CPU `index_add_` on a large 2-D accumulator
        # runs as a scatter_add about 3x slower than the two passes over the batch's rows)
        acc = grad_acc[lk.table]
        acc.index_copy_(0, rows, acc.index_select(0, rows).add_(per_row.abs_()))
        lk.seen = rows
        if lk.remask.numel() == lk.ids.numel():  # every id is re-masked: reuse the unique rows
            lk.rows = rows


def sampled_steps(first: int, span: int, k: int, seed: int, interval: int) -> frozenset[int]:
    """The `k` accumulating step positions of one interval: the window `[first, first + span)` cut
    into k equal parts and one step drawn in each (seeded by `seed` and the interval's number).

    Example:
        >>> steps = sorted(sampled_steps(0, 100, 4, seed=0, interval=3))
        >>> [s // 25 for s in steps], steps == sorted(sampled_steps(0, 100, 4, seed=0, interval=3))
        ([0, 1, 2, 3], True)
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + interval)
    edges = [first + (i * span) // k for i in range(k + 1)]
    return frozenset(lo + int(torch.randint(hi - lo, (1,), generator=gen)) for lo, hi in zip(edges, edges[1:]))



def _cat(parts: list[Tensor], like: Tensor) -> Tensor:
    """`torch.cat` that returns a single part as it is, and no parts as an empty tensor like `like`."""
    if not parts:
        return like.new_zeros(0)
    return parts[0] if len(parts) == 1 else torch.cat(parts)



def mask_gradient(param: Tensor, mask: Tensor) -> None:
    """Multiply the gradient of a densely trained table by its mask (the mask tensor is updated in
    place, so the hook follows it). A dense optimizer (Adam, momentum) moves rows the batch did not
    touch, so re-masking touched rows is not enough there; with a masked gradient, inactive weights
    never gain optimizer state and stay at zero. Data-parallel tables in DMP are slices of one flat
    TBE parameter: the hook goes on that parameter, on the slice's range."""
    original = getattr(param, "_original_tensor", None)
    if original is not None:
        start, end = param._start_offset, param._end_offset

        def hook(grad: Tensor) -> Tensor:
            grad = grad.clone()
            grad[start:end] *= mask.reshape(-1)
            return grad

        if original.requires_grad:
            original.register_hook(hook)
    elif param.requires_grad:
        param.register_hook(lambda grad: grad * mask if grad.layout == torch.strided else grad)



def resolved(pooled):
    """The KeyedTensor behind DMP's lazy awaitable output: the cached result the model already used
    (a second `wait()` would build a new tensor outside the autograd graph of the loss)."""
    if isinstance(pooled, Tensor) or not hasattr(pooled, "wait"):
        return pooled
    from torchrec.distributed.types import LazyAwaitable

    return LazyAwaitable._wait_async(pooled) if isinstance(pooled, LazyAwaitable) else pooled.wait()



__all__ = ["TableLookup", "table_lookups", "split_bags", "masked_grad", "accumulate", "sampled_steps", "mask_gradient", "resolved"]

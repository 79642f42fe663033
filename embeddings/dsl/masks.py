"""DSL masks as plain tensor functions: initial masks at a target density, and the prune/grow rule.

A mask is a bool tensor shaped like its table (`True` = active weight). Everything here is pure:
no modules, no optimizers, so each rule can be checked by hand on a 4x3 table.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    >>> m = w != 0
    >>> g = torch.tensor([[0., 0., 0.], [0., 0., 0.], [0., 0., 7.], [0., 2., 0.]])
    >>> new = prune_and_grow({"t": w}, {"t": m}, {"t": g}, 2)["t"]
    >>> new.int().tolist()   # 0.1 and 0.3 pruned; (2,2) and (3,1) grown
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def active_count(density: float, rows: int, dim: int) -> int:
    """Active weights of a `rows x dim` table at `density` (rounded to the nearest weight, at least 1).

    Example:
        >>> active_count(0.25, 10, 4)
        10
    """
    return max(1, min(rows * dim, int(round(density * rows * dim))))


def random_mask(rows: int, dim: int, n_active: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """A mask with exactly `n_active` active weights placed uniformly at random.

    Example:
        >>> int(random_mask(5, 4, 7, torch.Generator().manual_seed(0)).sum())
        7
    """
    total = rows * dim
    perm = torch.randperm(total, generator=generator, dtype=torch.int32 if total < 2**31 else torch.int64)[:n_active]
    mask = torch.zeros(rows * dim, dtype=torch.bool)
    mask[perm] = True
    return mask.view(rows, dim).to(device)


def frequency_mask(rows: int, dim: int, n_active: int, counts: Tensor,
                   generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """A mask with exactly `n_active` active weights, drawn so rows of frequent ids get more of them.

    Weighted sampling without replacement (Efraimidis-Spirakis keys `log(u) / w`) with row weight
    `w = log1p(count) + 1e-3`: the log keeps the head from taking the whole budget, and the small
    floor lets never-seen ids receive weights only once every seen id has had its chance.

    Example:
        >>> m = frequency_mask(4, 8, 12, torch.tensor([1000, 100, 0, 0]), torch.Generator().manual_seed(0))
        >>> int(m.sum()), bool(m[0].sum() >= m[1].sum() >= m[2].sum())
        (12, True)
    """
    counts = torch.as_tensor(counts)
    if counts.shape != (rows,):
        raise ValueError(f"frequency counts have shape {tuple(counts.shape)}, expected ({rows},): one count per row")
    w = (torch.log1p(counts.double().clamp(min=0)) + 1e-3).float()
    u = torch.rand(rows, dim, generator=generator).clamp_(min=1e-30)
    keys = u.log_().div_(w[:, None]).reshape(-1)  # float32, in place: one table-sized buffer
    mask = torch.zeros(rows * dim, dtype=torch.bool)
    mask[select(keys, n_active, largest=True)] = True
    return mask.view(rows, dim).to(device)


def kth_value(values: Tensor, k: int, sample: int = 1 << 18) -> Tensor:
    """The exact `k`-th smallest entry (1-based) of a 1-D tensor without NaN, as `torch.kthvalue` gives it.

    Large inputs go through a strided sample first: two sample quantiles bracket the k-th value with a
    wide safety margin, one counting pass finds how many entries lie below the bracket, and the exact
    answer is the k-th value of the (small) bracket alone. When the bracket misses, which the margin
    makes very unlikely and which is detected exactly, it falls back to `torch.kthvalue` on everything.

    Example:
        >>> float(kth_value(torch.tensor([5., 1., 4., 2., 3.]), 2))
        2.0
    """
    total = values.numel()
    if not 1 <= k <= total:
        raise ValueError(f"k={k} is outside 1..{total}")
    if total <= 4 * sample:
        return torch.kthvalue(values, k).values
    part = values[::total // sample]
    ns = part.numel()
    expected = k * ns / total
    margin = 6.0 * math.sqrt(expected * (1.0 - k / total)) + 8.0  # >> one binomial std of the sample rank
    lo_rank, hi_rank = int(expected - margin), int(math.ceil(expected + margin))
    lo = torch.kthvalue(part, lo_rank).values if lo_rank >= 1 else None
    hi = torch.kthvalue(part, hi_rank).values if hi_rank <= ns else None
    in_band = values >= lo if lo is not None else torch.ones_like(values, dtype=torch.bool)
    below = total - int(torch.count_nonzero(in_band))
    if hi is not None:
        in_band &= values <= hi
    band = values[in_band.nonzero().squeeze(1)]
    if 1 <= k - below <= band.numel():
        return torch.kthvalue(band, k - below).values
    return torch.kthvalue(values, k).values


def pick(values: Tensor, n: int, largest: bool, sample: int = 1 << 18) -> Tensor:
    """Bool mask of the `n` largest (or smallest) entries of a 1-D tensor; ties go to lower positions.

    Exact, by threshold (`kth_value`, then comparisons): no sort.

    Example:
        >>> pick(torch.tensor([3., 1., 3., 2.]), 2, largest=True).tolist()
        [True, False, True, False]
    """
    total = values.numel()
    n = max(0, min(n, total))
    if n == 0 or n == total:
        return torch.full_like(values, n == total, dtype=torch.bool)
    t = kth_value(values, total - n + 1 if largest else n, sample)
    picked = values > t if largest else values < t
    need = n - int(torch.count_nonzero(picked))
    if need > 0:
        picked[(values == t).nonzero().squeeze(1)[:need]] = True
    return picked


def select(values: Tensor, n: int, largest: bool) -> Tensor:
    """Sorted positions of the `n` largest (or smallest) entries of a 1-D tensor; ties go to lower positions.

    Exact and deterministic, in O(len) (a k-th value plus comparisons, no full sort).

    Example:
        >>> select(torch.tensor([3., 1., 3., 2.]), 2, largest=True).tolist()
        [0, 2]
        >>> select(torch.tensor([1., 0., 0., 5.]), 1, largest=False).tolist()
        [1]
    """
    return pick(values.reshape(-1), n, largest).nonzero().squeeze(1)


def _sample_stride(total: int, dims: list[int], sample: int) -> int:
    """A stride giving about `sample` entries that is coprime with every table dim (so the sample
    walks through all columns instead of one)."""
    s = max(1, total // sample)
    while any(math.gcd(s, d) != 1 for d in dims):
        s += 1
    return s


def _prune_positions(weights: list[Tensor], masks: list[Tensor], n: int, sample: int) -> list[Tensor]:
    """Flat positions, per table, of the `n` active weights of smallest |w| over all tables."""
    active = [m.reshape(-1).nonzero().squeeze(1) for m in masks]
    parts = [w.reshape(-1).index_select(0, a) for w, a in zip(weights, active)]
    pool = (torch.cat(parts) if len(parts) > 1 else parts[0]).float().abs_()
    if torch.isnan(pool).any():
        raise ValueError("DSL prune/grow met NaN embedding weights; training diverged before the mask update")
    picked = pick(pool, n, largest=False, sample=sample)
    return [a[p] for a, p in zip(active, picked.split([a.numel() for a in active]))] if len(active) > 1 else [active[0][picked]]


def _grow_candidates(acc: Tensor, mask: Tensor, above: float) -> tuple[Tensor, Tensor]:
    """(flat positions, values) of the inactive entries of `acc` greater than `above`, in position
    order. Rows are filtered first by their largest entry, so only rows that can hold a candidate
    are looked at element by element."""
    rows, dim = acc.shape
    mask = mask.reshape(rows, dim)
    cand_rows = (acc.amax(1) > above).nonzero().squeeze(1)
    sub = acc.index_select(0, cand_rows)
    hit = (sub > above).logical_and_(~mask.index_select(0, cand_rows))
    r, c = hit.nonzero(as_tuple=True)
    return cand_rows[r].mul_(dim).add_(c), sub[r, c]


def _grow_positions(acc: list[Tensor], masks: list[Tensor], n: int, inactive: int, sample: int) -> list[Tensor]:
    """Flat positions, per table, of the `n` inactive weights with the largest accumulated gradient
    magnitude over all tables (ties to the lower (table, position)); never a zero magnitude.

    A strided sample of the inactive magnitudes gives a value safely below the n-th largest; only
    entries above it are collected and ranked exactly. If fewer than `n` are above it (a miss), the
    non-zero magnitudes are ranked. Only weights with evidence are grown: if fewer than `n`
    inactive weights have a non-zero magnitude (rows unseen in the interval, few accumulating
    steps), all of them are returned, fewer than `n`."""
    # (a table without any candidate row is [0, dim]: reshape(0, -1) would be ambiguous)
    acc = [a.reshape(m.shape[0], -1) if a.numel() else a.reshape(0, m.shape[-1] if m.dim() > 1 else 1)
           for a, m in zip(acc, masks)]
    for a in acc:
        if a.numel() and torch.isnan(a.amax(1)).any():
            raise ValueError("DSL prune/grow met NaN gradient magnitudes; training diverged before the mask update")
    above = None
    total = sum(a.numel() for a in acc)
    if inactive > 4 * sample:
        stride = _sample_stride(total, [a.shape[1] for a in acc], sample)
        part = torch.cat([a.reshape(-1)[::stride][~m.reshape(-1)[::stride]] for a, m in zip(acc, masks)])
        expected = n * part.numel() / inactive
        rank = int(math.ceil(expected + 6.0 * math.sqrt(expected) + 8.0))  # from the top, with a wide margin
        if rank < part.numel():
            above = float(torch.kthvalue(part, part.numel() - rank).values)
            above = above if above > 0 else None
    for attempt in (above, 0.0) if above is not None else (0.0,):
        found = [_grow_candidates(a, m, attempt) for a, m in zip(acc, masks)]
        pool = torch.cat([v for _, v in found]) if len(found) > 1 else found[0][1]
        if pool.numel() >= n:
            picked = pick(pool, n, largest=True, sample=sample)
            return [p[k] for (p, _), k in zip(found, picked.split([p.numel() for p, _ in found]))]
    return [p for p, _ in found]


def exchange_positions(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], grad_acc: Mapping[str, Tensor],
                       n_exchange: int, sample: int = 1 << 18) -> dict[str, tuple[Tensor, Tensor]]:
    """(pruned, grown) flat positions per table for one prune/grow update; see `prune_and_grow`.

    Candidates only: |w| is read at the active positions, and the gradient magnitude of inactive
    weights is ranked through a sampled threshold (`_grow_positions`); the selections are exact.

    Example:
        >>> w = {"t": torch.tensor([[0.5, 0.1], [0.0, 0.0]])}
        >>> m = {"t": torch.tensor([[True, True], [False, False]])}
        >>> g = {"t": torch.tensor([[0.0, 0.0], [0.0, 3.0]])}
        >>> [x.tolist() for x in exchange_positions(w, m, g, 1)["t"]]
        [[1], [3]]
    """
    names = list(masks)
    mask_list = [masks[name] for name in names]
    n_active = sum(int(torch.count_nonzero(m)) for m in mask_list)
    total = sum(m.numel() for m in mask_list)
    n = max(0, min(int(n_exchange), n_active, total - n_active))
    if n == 0:
        empty = [torch.empty(0, dtype=torch.long, device=m.device) for m in mask_list]
        return {name: (e, e) for name, e in zip(names, empty)}
    # grow first: a weight is only exchanged for one with gradient evidence, so prune as many as grew
    grown = _grow_positions([grad_acc[name].detach() for name in names], mask_list, n, total - n_active, sample)
    n = sum(g.numel() for g in grown)
    if n == 0:
        return {name: (g, g) for name, g in zip(names, grown)}
    pruned = _prune_positions([weights[name].detach() for name in names], mask_list, n, sample)
    return {name: (p, g) for name, p, g in zip(names, pruned, grown)}


def prune_and_grow(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], grad_acc: Mapping[str, Tensor],
                   n_exchange: int) -> dict[str, Tensor]:
    """New masks: the `n_exchange` active weights of smallest |w| (ranked globally over all tables)
    are pruned, and the same number of previously inactive weights with the largest accumulated
    gradient magnitude are grown. Ties go to the lower (table order, flat position). Weights pruned
    in this update are not candidates for growth, so the active count is unchanged. Only inactive
    weights with a non-zero accumulated gradient are grown: when fewer than `n_exchange` have one,
    only that many weights move (growing a weight nothing pulled on would trade a trained weight
    for a zero that stays zero).

    Example:
        >>> w = {"a": torch.tensor([[1.0, 0.2]]), "b": torch.tensor([[0.0, 3.0]])}
        >>> m = {"a": torch.tensor([[True, True]]), "b": torch.tensor([[False, True]])}
        >>> g = {"a": torch.zeros(1, 2), "b": torch.tensor([[5.0, 0.0]])}
        >>> {k: v.int().tolist() for k, v in prune_and_grow(w, m, g, 1).items()}
        {'a': [[1, 0]], 'b': [[1, 1]]}
    """
    out = {}
    for name, (pruned, grown) in exchange_positions(weights, masks, grad_acc, n_exchange).items():
        new = masks[name].clone()
        new.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
        out[name] = new
    return out


def density(mask: Tensor) -> float:
    """Share of active weights in a mask.

    Example:
        >>> density(torch.tensor([[True, False], [False, False]]))
        0.25
    """
    return float(torch.count_nonzero(mask)) / max(1, mask.numel())


__all__ = ["active_count", "random_mask", "frequency_mask", "kth_value", "pick", "select", "exchange_positions",
           "prune_and_grow", "density"]

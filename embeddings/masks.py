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


def select(values: Tensor, n: int, largest: bool) -> Tensor:
    """Sorted positions of the `n` largest (or smallest) entries of a 1-D tensor; ties go to lower positions.

    Exact and deterministic, in O(len) (a k-th value plus comparisons, no full sort).

    Example:
        >>> select(torch.tensor([3., 1., 3., 2.]), 2, largest=True).tolist()
        [0, 2]
        >>> select(torch.tensor([1., 0., 0., 5.]), 1, largest=False).tolist()
        [1]
    """
    total = values.numel()
    n = max(0, min(n, total))
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=values.device)
    if n == total:
        return torch.arange(total, device=values.device)
    if largest:
        t = torch.kthvalue(values, total - n + 1).values
        strict = values > t
    else:
        t = torch.kthvalue(values, n).values
        strict = values < t
    need = n - int(torch.count_nonzero(strict))
    ties = (values == t).nonzero().squeeze(1)[:need]
    return torch.cat([strict.nonzero().squeeze(1), ties]).sort().values


def _pick(values: list[Tensor], candidates: list[Tensor], n: int, largest: bool, what: str = "values") -> list[Tensor]:
    """Bool tensors marking, over all tables together, the `n` candidate entries with the largest
    (or smallest) value; ties at the threshold go to the lower (table, flat position).

    Works by threshold (one k-th value over the candidates' values, then comparisons), so a
    64M-weight table costs a few passes and no sort or index list of all candidates.
    """
    flat_v = [v.reshape(-1) for v in values]
    flat_c = [c.reshape(-1) for c in candidates]
    pool = torch.cat([v[c] for v, c in zip(flat_v, flat_c)])
    if torch.isnan(pool).any():
        raise ValueError(f"DSL prune/grow met NaN {what}; training diverged before the mask update")
    if pool.numel() <= n:
        return [c.clone() for c in flat_c]
    k = pool.numel() - n + 1 if largest else n
    t = torch.kthvalue(pool, k).values
    del pool
    picked = [c & (v > t if largest else v < t) for v, c in zip(flat_v, flat_c)]
    need = n - sum(int(torch.count_nonzero(p)) for p in picked)
    for v, c, p in zip(flat_v, flat_c, picked):
        if need <= 0:
            break
        ties = (c & (v == t)).nonzero().squeeze(1)[:need]
        p[ties] = True
        need -= ties.numel()
    return picked


def prune_and_grow(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], grad_acc: Mapping[str, Tensor],
                   n_exchange: int) -> dict[str, Tensor]:
    """New masks: the `n_exchange` active weights of smallest |w| (ranked globally over all tables)
    are pruned, and the same number of previously inactive weights with the largest accumulated
    gradient magnitude are grown. Ties go to the lower (table order, flat position). Weights pruned
    in this update are not candidates for growth, so exactly `n_exchange` weights move and the
    active count is unchanged.

    Example:
        >>> w = {"a": torch.tensor([[1.0, 0.2]]), "b": torch.tensor([[0.0, 3.0]])}
        >>> m = {"a": torch.tensor([[True, True]]), "b": torch.tensor([[False, True]])}
        >>> g = {"a": torch.zeros(1, 2), "b": torch.tensor([[5.0, 0.0]])}
        >>> {k: v.int().tolist() for k, v in prune_and_grow(w, m, g, 1).items()}
        {'a': [[1, 0]], 'b': [[1, 1]]}
    """
    names = list(masks)
    mask_list = [masks[n] for n in names]
    n_active = sum(int(torch.count_nonzero(m)) for m in mask_list)
    n = max(0, min(int(n_exchange), n_active, sum(m.numel() for m in mask_list) - n_active))
    if n == 0:
        return {name: m.clone() for name, m in zip(names, mask_list)}
    w_abs = [weights[name].detach().abs() for name in names]
    pruned = _pick(w_abs, mask_list, n, largest=False, what="embedding weights")
    del w_abs
    # Growth ranks inactive weights with a non-zero accumulated gradient; only when there are
    # fewer than n of those do zero-gradient ones fill up (lowest position first).
    acc = [grad_acc[name].detach() for name in names]
    grown = _pick(acc, [(~m) & (a != 0) for m, a in zip(mask_list, acc)], n, largest=True, what="gradient magnitudes")
    missing = n - sum(int(torch.count_nonzero(g)) for g in grown)
    for m, a, g in zip(mask_list, acc, grown):
        if missing <= 0:
            break
        fill = ((~m) & (a == 0)).reshape(-1).nonzero().squeeze(1)[:missing]
        g[fill] = True
        missing -= fill.numel()
    return {name: ((m.reshape(-1) & ~p) | g).view_as(m) for name, m, p, g in zip(names, mask_list, pruned, grown)}


def mask_changes(old: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
    """(pruned, grown) bool tensors between two masks of one table.

    Example:
        >>> p, g = mask_changes(torch.tensor([True, False]), torch.tensor([False, True]))
        >>> p.tolist(), g.tolist()
        ([True, False], [False, True])
    """
    return old & ~new, new & ~old


def density(mask: Tensor) -> float:
    """Share of active weights in a mask.

    Example:
        >>> density(torch.tensor([[True, False], [False, False]]))
        0.25
    """
    return float(torch.count_nonzero(mask)) / max(1, mask.numel())


__all__ = ["active_count", "random_mask", "frequency_mask", "select", "prune_and_grow", "mask_changes", "density"]

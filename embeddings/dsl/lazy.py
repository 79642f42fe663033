"""Lazy DSL (`dsl.mode: lazy`): the budget is enforced at every update and at the end, not between.

Periodic projection instead of a per-step mask, as in DeepLight (Deng et al., WSDM 2021: prune by
magnitude every few iterations, weights train freely between) and AC/DC (Peste et al., NeurIPS
2021: alternating dense and fixed-support phases match sparse-training quality); the official DSL
code (shuyao-wang/DSL, `LightGCN/utils/core.py`, `Masking`) multiplies the whole table by the
mask after every step, which this makes periodic.

Per step: nothing beyond the plain step but keeping a reference to the batch (no hook, no mask,
no re-mask: every looked-up row's inactive weights may drift from zero until the next update). On
`grad_steps` sampled steps of each interval (default 10) a hook on the pooled output adds the rows'
gradient magnitude to the evidence, as in `exact`.

Per update (every ΔT steps), work in proportion to the rows the interval looked up, not the table:
- the looked-up rows are projected (inactive weights zeroed: the only rows that can have drifted,
  since fused sparse optimizers step only the rows a batch looked up);
- grow: the `n` largest evidence values among the inactive weights of the rows with evidence;
- prune: the `n` active weights of smallest |w|, ranked exactly from a candidate cache: every
  active weight with |w| <= a bound H, kept across updates (a weight of a row not looked up has not
  changed, so its entry stays valid; looked-up rows are rescanned). Any active weight outside the
  cache is above H, so the `n` smallest of the cache are the `n` smallest of all while the cache
  holds at least `n`; when it holds fewer, one read pass over the tables rebuilds it with a new H
  (a strided sample of |w| sets H near twice the exchange). Ties go to the lower (table, position),
  as in `exact` (`masks.exchange_positions`), so both choose the same weights from the same
  weights and evidence;
- pruned and grown weights are zeroed with their element-wise optimizer state; row-wise state is
  reset where no weight active before is active after (as in `exact`).
Final exact phase: the last `cfg.final_exact_steps` steps (default one interval, ΔT) run as
`exact` (the tables are projected once when it starts, then touched rows are re-masked per step),
so the trained and exported model honours the budget exactly. Row-wise optimizer state (one
value per row) also sees the gradients of inactive weights between updates; that is the price of
the free steps.

Example:
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> from embeddings.config import DSLConfig
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"])])
    >>> dsl = LazyDSLController(ebc, DSLConfig(enabled=True, mode="lazy", density=0.5, update_every=2, init="random"), total_steps=6)
    >>> opt = torch.optim.SGD(ebc.parameters(), lr=0.1)
    >>> for step in range(6):
    ...     kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([step, 7, 8]), lengths=torch.tensor([2, 1]))
    ...     pooled = ebc(kjt)
    ...     dsl.observe(kjt, pooled)
    ...     (pooled.values() - 1).pow(2).sum().backward(); opt.step(); opt.zero_grad()
    ...     _ = dsl.after_step(step)
    >>> int((ebc.embedding_bags["t"].weight != 0).sum()) <= dsl.budget
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embeddings.dsl.controller import DSLController
from embeddings.dsl.hooks import TableLookup, resolved, table_lookups
from embeddings.dsl.masks import _grow_positions, _sample_stride, kth_value
from embeddings.dsl.remask import is_distributed

__all__ = ["LazyDSLController"]

_PASS_CHUNK_BYTES = 1 << 21  # a full pass walks each table in chunks of about this many bytes
_SAMPLE = 1 << 16            # |w| samples that set the cache bound
_CACHE_FACTOR = 2.0          # the cache bound H is set to hold about this many times the exchange
_GATHER_SHARE = 0.35         # above this share of a table's rows looked up, one chunked pass replaces the gather (measured: gather at 30%, pass at 45%)


class LazyDSLController(DSLController):
    """`DSLController` with periodic projection (see the module docstring); same constructor and API."""

    default_grad_steps = 10  # sampled evidence steps per interval when cfg.grad_steps is None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[str, list[Tensor]] = {name: [] for name in self.tables}
        self._batches: list[tuple[object, bool]] = []  # (kjt, ids by position) of each step since the last update
        self._cache: dict[str, tuple[Tensor, Tensor]] | None = None  # prune candidates: positions, |w|
        self._bound = 0.0
        self.full_scans = 0  # read passes over the whole tables that rebuilt the cache (a figure for benchmarks)
        self._active: dict[str, int] | None = None  # active weights per table, kept through the exchanges

    def active_weights(self) -> int:
        """Active weights over all DSL tables (counted once, then kept through each exchange)."""
        return sum(self._counts().values())

    def density_by_table(self) -> dict[str, float]:
        return {name: c / self.masks[name].numel() for name, c in self._counts().items()}

    def _counts(self) -> dict[str, int]:
        if self._active is None:
            self._active = {name: int(torch.count_nonzero(m)) for name, m in self.masks.items()}
        return self._active

    @property
    def exact_from(self) -> int:
        """First 0-based step of the final exact phase."""
        tail = self.cfg.final_exact_steps if self.cfg.final_exact_steps is not None else self.cfg.update_every
        return max(0, self.total_steps - tail)

    def _exact_phase(self) -> bool:
        return self._steps_done >= self.exact_from

    def observe(self, kjt, pooled) -> None:
        """Keep the batch (its rows are projected at the update); on sampled steps register the evidence
        hook (in the final exact phase: `DSLController.observe`)."""
        if self._exact_phase():
            return super().observe(kjt, pooled)
        pooled = resolved(pooled)
        self._batches.append((kjt, isinstance(pooled, Tensor)))
        if not self._accumulates():
            return
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        if not values.requires_grad:
            return
        lookups = table_lookups(kjt, pooled, self.tables, self._feature_table, self.masks, collect_remask=False,
                                grad_masks=False)
        if lookups:
            values.register_hook(lambda grad, lookups=lookups: self._on_grad(grad, lookups, True))

    def after_step(self, step: int) -> dict:
        """Every ΔT steps: project the looked-up rows, prune and grow. Entering the final exact phase:
        project once; from there on as `DSLController.after_step`."""
        if self._exact_phase():
            return super().after_step(step)
        stats, fraction = self.tick(step, self.budget)
        if fraction is not None:
            n = int(round(fraction * self.budget))
            moved = self._incremental_update(n)
            if moved is None:  # sharded / multi-rank / densely trained tables: exact's selection, then project
                moved = self._prune_and_grow(n) if n > 0 else 0
                self._active = None
                self._project()
                for acc in self.grad_acc.values():
                    acc.zero_()
            for seen in self._seen.values():
                seen.clear()
            self._batches.clear()
            self.updates += 1
            self.exchanged_total += moved
            stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                         density=self.density_by_table(), embedding_bytes=self.live_bytes())
        elif self._exact_phase():  # the next step is the first exact one: start it projected
            self._project()
            self._batches.clear()
        return stats

    def load_state_dict(self, d) -> None:
        super().load_state_dict(d)
        self._cache, self._batches, self._active = None, [], None
        for seen in self._seen.values():
            seen.clear()

    def _on_grad(self, grad: Tensor, lookups: list[TableLookup], accumulate_: bool) -> Tensor:
        out = super()._on_grad(grad, lookups, accumulate_)
        if accumulate_ and not self._exact_phase():  # the rows with evidence: the only grow candidates
            for lk in lookups:
                if lk.seen is not None:
                    self._seen[lk.table].append(lk.seen)
        return out

    # -- the update -------------------------------------------------------------------------

    @torch.no_grad()
    def _incremental_update(self, n: int) -> int | None:
        """The update over the rows the interval looked up (None where it does not apply: sharded or
        replicated-across-ranks tables, tables with a dense optimizer). Returns weights grown."""
        if is_distributed():
            return None
        weights = {}
        for name, t in self.tables.items():
            w = t.shards[0].tensor if len(t.shards) == 1 else None
            if w is None or t.dense_param is not None or w.shape != self.masks[name].shape or not w.is_contiguous():
                return None
            weights[name] = w
        touched = self._looked_up_rows()
        grown, seen = self._grow_from_seen(n)
        n = sum(int(g.numel()) for g in grown.values())
        if n == 0:  # nothing to exchange (the schedule has ended, or no evidence): project, no cache to keep up
            self._cache = None
            for name, rows in touched.items():
                self._project_rows(weights[name], self.masks[name], rows)
            pruned = {k: g[:0] for k, g in grown.items()}
        elif self._cache is None or any(rows is None for rows in touched.values()):
            # a pass over whole tables anyway (first update, or most rows looked up): a new bound
            # first, then ONE pass per table that projects and collects the candidates
            self._set_bound(weights, n)
            self._cache = {k: self._scan(weights[k], self.masks[k], project=True) for k in weights}
            self.full_scans += 1
            pruned = self._prune_from_cache(weights, n)
        else:
            rescanned = {k: self._project_rows(weights[k], self.masks[k], rows) for k, rows in touched.items()}
            self._merge_cache(weights, touched, rescanned)
            pruned = self._prune_from_cache(weights, n)
        for name, t in self.tables.items():
            self._apply(name, t, weights[name], pruned[name], grown[name])
            self.grad_acc[name].index_fill_(0, seen[name], 0)  # evidence lives on the seen rows only
        if self._cache is not None:  # grown weights are active at 0 from now on: candidates
            for name, g in grown.items():
                pos, val = self._cache[name]
                self._cache[name] = (torch.cat([pos, g]), torch.cat([val, val.new_zeros(g.numel())]))
        return n

    def _looked_up_rows(self) -> dict[str, Tensor | None]:
        """Sorted unique rows each table looked up since the last update (None: most of the table)."""
        parts: dict[str, list[Tensor]] = {name: [] for name in self.tables}
        for kjt, positional in self._batches:
            values, offsets = kjt.values(), kjt.offset_per_key()
            for p, key in enumerate(kjt.keys()):
                table = self._feature_table.get(p if positional else key)
                if table is not None and offsets[p + 1] > offsets[p]:
                    parts[table].append(values[offsets[p]:offsets[p + 1]])
        out: dict[str, Tensor | None] = {}
        for name, ps in parts.items():
            rows = self.masks[name].shape[0]
            r = _unique_rows(ps, rows) if ps else torch.zeros(0, dtype=torch.long, device=self.masks[name].device)
            out[name] = None if r.numel() > _GATHER_SHARE * rows else r
        return out

    def _project_rows(self, w: Tensor, mask: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """Zero the inactive weights of `rows` (None: the whole table, in chunks). Returns the rows'
        active positions with |w| <= the cache bound and their |w| (None when there is no cache)."""
        dim = w.shape[1]
        scan = self._cache is not None
        if rows is None:
            return self._scan(w, mask, project=True, collect=scan)
        if rows.numel() == 0:
            return (rows, w.new_zeros(0)) if scan else None
        wr, mr = w.index_select(0, rows), mask.index_select(0, rows)
        wr.mul_(_as_float(mr, wr.dtype))
        w.index_copy_(0, rows, wr)
        if not scan:
            return None
        a = wr.abs_()
        idx = (mr & (a <= self._bound)).view(-1).nonzero().squeeze(1)
        pos = rows.index_select(0, idx // dim).mul_(dim).add_(idx % dim)
        return pos, a.view(-1).index_select(0, idx).float()

    def _scan(self, w: Tensor, mask: Tensor, project: bool, collect: bool = True) -> tuple[Tensor, Tensor] | None:
        """One chunked pass over a table: zero its inactive weights (`project`) and collect the active
        positions with |w| <= the cache bound and their |w|."""
        rows, dim = w.shape
        step = max(1, _PASS_CHUNK_BYTES // max(1, dim * w.element_size()))
        pos, val = [], []
        for r0 in range(0, rows, step):
            wc, mc = w[r0:r0 + step], mask[r0:r0 + step]
            if project:
                wc.mul_(_as_float(mc, wc.dtype))
            if not collect:
                continue
            a = wc.abs()
            idx = (mc & (a <= self._bound)).view(-1).nonzero().squeeze(1)
            pos.append(idx + r0 * dim)
            val.append(a.view(-1).index_select(0, idx).float())
        if not collect:
            return None
        return (torch.cat(pos), torch.cat(val)) if pos else (w.new_zeros(0, dtype=torch.long), w.new_zeros(0))

    def _merge_cache(self, weights: dict[str, Tensor], touched: dict[str, Tensor], rescanned: dict[str, tuple[Tensor, Tensor]]) -> None:
        """The cache's entries of looked-up rows replaced by their rescan (the other rows did not change)."""
        for name, rows in touched.items():
            pos, val = self._cache[name]
            if rows.numel():
                hit = torch.zeros(weights[name].shape[0], dtype=torch.bool, device=pos.device)
                hit[rows] = True
                keep = hit.index_select(0, pos // weights[name].shape[1]).logical_not_()
                pos, val = pos.masked_select(keep), val.masked_select(keep)
            new_pos, new_val = rescanned[name]
            self._cache[name] = (torch.cat([pos, new_pos]), torch.cat([val, new_val]))

    def _prune_from_cache(self, weights: dict[str, Tensor], n: int) -> dict[str, Tensor]:
        """Positions of the `n` active weights of smallest |w| (before this update's exchange), taken
        out of the cache."""
        names = list(weights)
        if sum(int(p.numel()) for p, _ in self._cache.values()) < n:
            self._rebuild_cache(weights, n)
        pos = [self._cache[k][0] for k in names]
        vals = torch.cat([self._cache[k][1] for k in names])
        chosen = _pick_smallest(vals, pos, n)
        out = {}
        for name, p, c in zip(names, pos, chosen.split([int(x.numel()) for x in pos])):
            out[name] = p.masked_select(c)
            keep = c.logical_not()
            self._cache[name] = (p.masked_select(keep), self._cache[name][1].masked_select(keep))
        return out

    def _set_bound(self, weights: dict[str, Tensor], n: int, factor: float | None = None) -> None:
        """The cache bound H near the `factor * n`-th smallest active |w| (default `_CACHE_FACTOR`),
        from a strided sample of the active weights (drifted inactive ones are not sampled)."""
        names = list(weights)
        total = sum(w.numel() for w in weights.values())
        stride = _sample_stride(total, [w.shape[1] for w in weights.values()], _SAMPLE)
        sample = torch.cat([weights[k].view(-1)[::stride][self.masks[k].view(-1)[::stride]].abs().float() for k in names])
        if torch.isnan(sample).any():
            raise ValueError("DSL prune/grow met NaN embedding weights; training diverged before the mask update")
        active = max(1, self.budget)
        want = min(active, (_CACHE_FACTOR if factor is None else factor) * n)
        self._bound = math.inf
        if want < active and sample.numel():
            expected = want * sample.numel() / active
            rank = int(math.ceil(expected + 6.0 * math.sqrt(expected) + 8.0))
            if rank <= sample.numel():
                self._bound = float(torch.kthvalue(sample, rank).values)

    def _rebuild_cache(self, weights: dict[str, Tensor], n: int) -> None:
        """Read passes over every table until the cache holds at least `n` (the bound set from a sample,
        widened when the sample misled, which is very unlikely)."""
        factor = _CACHE_FACTOR
        while True:
            self._set_bound(weights, n, factor)
            self._cache = {k: self._scan(weights[k], self.masks[k], project=False) for k in weights}
            self.full_scans += 1
            if sum(int(p.numel()) for p, _ in self._cache.values()) >= n or self._bound == math.inf:
                return
            factor *= 2

    def _grow_from_seen(self, n: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """exact's grow rule (`masks._grow_positions`: a sampled threshold, then an exact pick) on the
        rows seen on accumulating steps only (no other row has evidence), mapped back to table
        positions; and those rows."""
        names = list(self.tables)
        rows, subs, sub_masks = [], [], []
        for name in names:
            mask = self.masks[name]
            parts = self._seen[name]
            r = _unique_rows(parts, mask.shape[0]) if parts else torch.zeros(0, dtype=torch.long, device=mask.device)
            rows.append(r)
            subs.append(self.grad_acc[name].index_select(0, r))
            sub_masks.append(mask.index_select(0, r))
        seen = dict(zip(names, rows))
        inactive = sum(int(m.numel() - torch.count_nonzero(m)) for m in sub_masks)
        if n <= 0 or inactive == 0:
            return {name: r[:0] for name, r in zip(names, rows)}, seen
        found = _grow_positions(subs, sub_masks, n, inactive, 1 << 18)
        out = {}
        for name, r, pos in zip(names, rows, found):
            dim = self.masks[name].shape[1]
            out[name] = r.index_select(0, pos // dim).mul_(dim).add_(pos % dim)
        return out, seen

    def _apply(self, name: str, t, w: Tensor, pruned: Tensor, grown: Tensor) -> None:
        """Write one table's exchange: mask, weights (pruned and grown start at 0), optimizer state
        (element-wise zeroed at both; row-wise reset where no weight active before is active after)."""
        if pruned.numel() == 0 and grown.numel() == 0:
            return
        mask = self.masks[name]
        dim = mask.shape[1]
        rows = _unique_rows([pruned // dim, grown // dim], mask.shape[0])
        before = mask.index_select(0, rows)
        mask.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
        w.view(-1).index_fill_(0, pruned, 0).index_fill_(0, grown, 0)
        counts = self._counts()
        counts[name] += int(grown.numel()) - int(pruned.numel())
        states = t.optimizer_states()
        if not states:
            return
        lost = ~(before & mask.index_select(0, rows)).any(1)  # grown weights were inactive before
        for st in states:
            if st.kind == "element":
                st.tensor.view(-1).index_fill_(0, pruned, 0).index_fill_(0, grown, 0)
            else:
                st.tensor.index_fill_(0, rows[lost], 0)

    @torch.no_grad()
    def _project(self) -> None:
        """Zero every inactive weight: one `masked_fill_` per shard (a bool fill is vectorised; a float
        multiply by a bool mask is not)."""
        for name, t in self.tables.items():
            for shard in t.shards:
                rs, cs = shard.full
                shard.tensor.masked_fill_(self.masks[name][rs, cs].logical_not(), 0)


def _pick_smallest(values: Tensor, positions: list[Tensor], k: int) -> Tensor:
    """Bool mask of the `k` smallest `values`, ties to the lower (table, position): `values` are the
    tables' candidates in table order, `positions` each table's positions (in any order)."""
    if k <= 0:
        return torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    t = kth_value(values, k, _SAMPLE)
    chosen = values < t
    need = k - int(torch.count_nonzero(chosen))
    if need > 0:
        tied = (values == t).nonzero().squeeze(1)
        table = torch.cat([torch.full((p.numel(),), i, dtype=torch.long, device=values.device)
                           for i, p in enumerate(positions)])
        pos = torch.cat(positions)
        key = table.index_select(0, tied) * (int(pos.max()) + 1 if pos.numel() else 1) + pos.index_select(0, tied)
        chosen[tied.index_select(0, key.argsort()[:need])] = True
    return chosen


def _as_float(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask as 0/1 of `dtype` (bool -> uint8 -> float): a float multiply by it is about 5x
    faster on CPU than `masked_fill_` with the negated mask."""
    return mask.view(torch.uint8).to(dtype)


def _unique_rows(parts: list[Tensor], rows: int) -> Tensor:
    """Sorted unique row numbers of `parts`: through a row bitmap when the table is not much larger
    than the ids (a scan instead of a sort), else `torch.unique`."""
    ids = torch.cat(parts) if len(parts) > 1 else parts[0]
    if rows > 8 * ids.numel():
        return torch.unique(ids)
    seen = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    seen.index_fill_(0, ids, True)
    return seen.nonzero().squeeze(1)

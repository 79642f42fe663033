"""Lazy DSL (`dsl.mode: lazy`): the budget is enforced at every update and at the end, not between.

Periodic projection instead of a per-step mask, as in DeepLight (Deng et al., WSDM 2021: prune by
magnitude every few iterations, weights train freely between) and AC/DC (Peste et al., NeurIPS
2021: alternating dense and fixed-support phases match sparse-training quality); the official DSL
code (shuyao-wang/DSL, `LightGCN/utils/core.py`, `Masking`) multiplies the whole table by the
mask after every step, which this makes periodic.

Per step: nothing. No hook, no mask, no re-mask, no reference to the batch: the step is the plain
FBGEMM step, and every looked-up row's inactive weights train freely until the next update.

Per update (every ΔT steps), one pass over the rows that changed since the last update:
- which rows: those whose row-wise optimizer state changed (FBGEMM's row-wise Adagrad adds the
  row's mean squared gradient at every step that looks it up, so a snapshot of that one value per
  row, compared at the update, names the rows looked up, at no cost per step). A table without a
  row-wise state (SGD, Adam), or with most rows changed, is passed over whole, in chunks;
- gradient evidence for growth: the magnitude an inactive weight reached while training freely
  since the last projection (it was zero then, so |w| is its accumulated, optimizer-scaled
  gradient). The `n` largest grow, keeping the value they trained to (they have been part of the
  model all interval; nothing restarts at zero). Candidates are collected above a threshold set
  from a strided sample of the changed rows with a wide margin, so at most `n` grow (fewer only
  when fewer inactive weights moved at all);
- prune: the `n` active weights of smallest |w|, ranked exactly from a candidate cache: every
  active weight with |w| <= a bound H, kept across updates (a weight of a row not looked up has not
  changed, so its entry stays valid; changed rows are rescanned). Any active weight outside the
  cache is above H, so the `n` smallest of the cache are the `n` smallest of all while the cache
  holds at least `n`; when it holds fewer, one read pass over the tables rebuilds it with a new H.
  Ties go to the lower (table, position), as in `exact`;
- the same pass zeroes every inactive weight of the changed rows (the projection); pruned weights
  are zeroed with their element-wise optimizer state. Row-wise state is left alone: every weight of
  a looked-up row trained with it.
Final exact phase: the last `cfg.final_exact_steps` steps (default one interval, ΔT) run as
`exact` (the tables are projected once when it starts, then touched rows are re-masked per step),
so the trained and exported model honours the budget exactly.

The guarantee: the mask always holds exactly the budget; the weights honour it right after every
update and through the final exact phase (so at the end and in the export), not between updates.
Rows found from the row-wise state: a row whose state did not move in float32 (a gradient below
2^-24 of its accumulated squares) is not projected at that update; its drift (below lr x 2^-12)
is zeroed by the final phase.

Where the tables are not one whole local tensor with a fused optimizer (sharded across ranks,
several ranks, a dense optimizer), the update is the same rule on whole tables (|w| joined across
ranks), written shard by shard.

Two implementations of the update above, with the same results: on CPU float32 tables with numba
installed, fused kernels (`embeddings.dsl.lazy_fused`, `embeddings.dsl.lazy_kernels`: each job one
pass, at memory speed); elsewhere (CUDA, other dtypes, no numba, `fused = False`) the torch ops
below, chunk by chunk (on CPU 5-9 ns per weight of the changed rows, 2.0-3.8x the fused update).

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

import embeddings.dsl.lazy_fused as lazy_fused
from embeddings.dsl.controller import DSLController
from embeddings.dsl.masks import _sample_stride, exchange_positions, kth_value, pick
from embeddings.dsl.remask import Changes, is_distributed

__all__ = ["LazyDSLController"]

_PASS_CHUNK_BYTES = 1 << 19  # a pass walks rows in chunks of about this many bytes (they stay in cache)
_SAMPLE = 1 << 16            # |w| samples that set the cache bound and the growth threshold
_CACHE_FACTOR = 2.0          # the cache bound H is set to hold about this many times the exchange
_GATHER_SHARE = 0.6          # above this share of a table's rows changed, one chunked pass replaces the gather
                             # (300k x 64, one-id bags, 37% of rows changed per update: amortised 2.55x at 0.6, 3.02x at 0.35)


class LazyDSLController(DSLController):
    """`DSLController` with periodic projection (see the module docstring); same constructor and API."""

    masks_dense_gradients = False  # a dense optimizer's table drifts too, and is projected at each update

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, tuple[Tensor, Tensor]] | None = None  # prune candidates: positions, |w|
        self._bound = 0.0       # cache bound H
        self._grow_above = 0.0  # growth candidates: inactive |w| above this
        self._row_state: dict[str, Tensor] | None = None  # row-wise optimizer state at the last projection
        self.full_scans = 0     # passes over whole tables (a figure for benchmarks)
        self._active: dict[str, int] | None = None  # active weights per table, kept through the exchanges
        self.fused = True       # CPU float32 tables: the update through the fused kernels (`lazy_fused`) where numba is installed

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
        """Nothing between updates; in the final exact phase `DSLController.observe`."""
        if self._exact_phase():
            super().observe(kjt, pooled)

    def after_step(self, step: int) -> dict:
        """Every ΔT steps: project the changed rows, prune and grow. Entering the final exact phase:
        project once; from there on as `DSLController.after_step`."""
        if self._exact_phase():
            return super().after_step(step)
        stats, fraction = self.tick(step, self.budget)
        if fraction is not None:
            n = int(round(fraction * self.budget))
            moved = self._update(n)
            self.updates += 1
            self.exchanged_total += moved
            stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                         density=self.density_by_table(), embedding_bytes=self.live_bytes())
        if self._exact_phase():  # the next step is the first exact one: start it projected
            self._project()
        return stats

    def load_state_dict(self, d) -> None:
        super().load_state_dict(d)
        self._cache, self._active, self._row_state = None, None, None

    # -- the update -------------------------------------------------------------------------

    @torch.no_grad()
    def _update(self, n: int) -> int:
        """Project, prune and grow at most `n` weights; returns how many grew."""
        weights = self._whole_tables()
        if weights is None:
            return self._update_tables(n)
        if lazy_fused.fusable(self, weights):
            return lazy_fused.update(self, weights, n)
        changed = self._changed_rows(weights)
        if n <= 0:  # the schedule has ended: project only, no cache to keep up
            self._cache = None
            for name, rows in changed.items():
                self._pass(weights[name], self.masks[name], rows, prune=False, grow=False)
            self._snapshot_row_state()
            return 0
        self._set_grow_bound(weights, changed, n)
        full = self._cache is None or any(rows is None for rows in changed.values())
        if full:  # a pass over whole tables anyway: a new cache bound first, then ONE pass per table
            self._set_bound(weights, n)
            self.full_scans += 1
        cands, growth = {}, {}
        for name, rows in changed.items():
            cands[name], growth[name] = self._pass(weights[name], self.masks[name], None if full else rows,
                                                   prune=True, grow=True)
        if full:
            self._cache = cands
        else:
            self._merge_cache(weights, changed, cands)
        grown, values = self._pick_growth(growth, n)
        pruned = self._prune_from_cache(weights, sum(int(g.numel()) for g in grown.values()))
        for name, t in self.tables.items():
            self._apply(name, t, weights[name], pruned[name], grown[name], values[name])
        self._snapshot_row_state()
        return sum(int(g.numel()) for g in grown.values())

    def _whole_tables(self) -> dict[str, Tensor] | None:
        """Each table's one local contiguous tensor, trained by a fused optimizer (None otherwise)."""
        if is_distributed():
            return None
        out = {}
        for name, t in self.tables.items():
            w = t.shards[0].tensor if len(t.shards) == 1 else None
            if w is None or t.dense_param is not None or w.shape != self.masks[name].shape or not w.is_contiguous():
                return None
            out[name] = w
        return out

    def _row_states(self) -> dict[str, Tensor]:
        """Each table's row-wise optimizer state (tables without one are left out)."""
        out = {}
        for name, t in self.tables.items():
            rows = [st.tensor for st in t.optimizer_states() if st.kind == "row"]
            if rows:
                out[name] = rows[0]
        return out

    def _changed_rows(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """Sorted rows of each table looked up since the last projection, read off the change of its
        row-wise optimizer state (None: the whole table: no such state, no snapshot yet, or most rows)."""
        out: dict[str, Tensor | None] = {name: None for name in weights}
        if self._row_state is None:
            return out
        for name, state in self._row_states().items():
            snap = self._row_state.get(name)
            if snap is None or snap.shape != state.shape:
                continue
            rows = state.ne(snap).nonzero().squeeze(1)
            out[name] = None if rows.numel() > _GATHER_SHARE * state.numel() else rows
        return out

    def _snapshot_row_state(self) -> None:
        states = self._row_states()
        if self._row_state is None:
            self._row_state = {}
        for name, state in states.items():
            snap = self._row_state.get(name)
            if snap is None or snap.shape != state.shape:
                self._row_state[name] = state.clone()
            else:
                snap.copy_(state)

    def _pass(self, w: Tensor, mask: Tensor, rows: Tensor | None, prune: bool, grow: bool):
        """One pass over `rows` of a table (None: all of it), in cache-sized chunks: collect the
        active positions with |w| <= H and their |w| (`prune`), the inactive positions with |w| >
        the growth threshold and their signed w (`grow`), then zero the inactive weights."""
        n_rows, dim = w.shape
        step = max(1, _PASS_CHUNK_BYTES // max(1, dim * w.element_size()))
        cpos, cval, gpos, gval = [], [], [], []
        total = n_rows if rows is None else rows.numel()
        for r0 in range(0, total, step):
            if rows is None:
                wc, mc, base = w[r0:r0 + step], mask[r0:r0 + step], None
            else:
                base = rows[r0:r0 + step]
                wc, mc = w.index_select(0, base), mask.index_select(0, base)
            if prune or grow:
                a = wc.abs()
                if prune:
                    idx = a.le(self._bound).logical_and_(mc).view(-1).nonzero().squeeze(1)
                    cpos.append(_positions(idx, r0, base, dim))
                    cval.append(a.view(-1).index_select(0, idx).float())
                if grow:
                    idx = a.gt(self._grow_above).logical_and_(mc.logical_not()).view(-1).nonzero().squeeze(1)
                    gpos.append(_positions(idx, r0, base, dim))
                    gval.append(wc.view(-1).index_select(0, idx))
            wc.mul_(_as_float(mc, wc.dtype))
            if base is not None:
                w.index_copy_(0, base, wc)
        empty = (w.new_zeros(0, dtype=torch.long), w.new_zeros(0))
        return (_cat2(cpos, cval, empty), _cat2(gpos, gval, empty))

    def _set_grow_bound(self, weights: dict[str, Tensor], changed: dict[str, Tensor | None], n: int) -> None:
        """The growth threshold: safely below the `n`-th largest |w| among the inactive weights of
        the changed rows, from a sample of every k-th changed row (the same k in every table)."""
        total = sum(weights[k].shape[0] if r is None else r.numel() for k, r in changed.items())
        dim = max(w.shape[1] for w in weights.values())
        k = max(1, (total * dim) // _SAMPLE)
        parts, sampled_rows = [], 0
        for name, rows in changed.items():
            w, mask = weights[name], self.masks[name]
            idx = torch.arange(0, w.shape[0], k, device=w.device) if rows is None else rows[::k]
            wc, mc = w.index_select(0, idx), mask.index_select(0, idx)
            parts.append(wc.masked_select(mc.logical_not()).abs().float())
            sampled_rows += idx.numel()
        sample = torch.cat(parts)
        if torch.isnan(sample).any():
            raise ValueError("DSL prune/grow met NaN embedding weights; training diverged before the mask update")
        self._grow_above = 0.0
        inactive = sample.numel() * total / max(1, sampled_rows)  # inactive weights of the changed rows, estimated
        if sample.numel() and inactive > n:
            expected = n * sample.numel() / inactive
            rank = int(math.ceil(expected + 6.0 * math.sqrt(expected) + 8.0))  # from the top, a wide margin
            if rank < sample.numel():
                self._grow_above = max(0.0, float(torch.kthvalue(sample, sample.numel() - rank).values))

    def _pick_growth(self, growth: dict[str, tuple[Tensor, Tensor]], n: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The `n` collected inactive weights of largest |w| (ties to the lower (table, position)):
        positions and signed values per table."""
        names = list(growth)
        pool = torch.cat([growth[k][1].abs().float() for k in names])
        chosen = pick(pool, n, largest=True, sample=_SAMPLE) if pool.numel() > n else torch.ones_like(pool, dtype=torch.bool)
        pos, val = {}, {}
        for name, c in zip(names, chosen.split([int(growth[k][0].numel()) for k in names])):
            p, v = growth[name]
            pos[name], val[name] = p.masked_select(c), v.masked_select(c)
        return pos, val

    def _merge_cache(self, weights: dict[str, Tensor], changed: dict[str, Tensor], rescanned: dict[str, tuple[Tensor, Tensor]]) -> None:
        """The cache's entries of changed rows replaced by their rescan (the other rows did not change)."""
        for name, rows in changed.items():
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
        widened when the sample misled, which is very unlikely). The tables are projected already."""
        factor = _CACHE_FACTOR
        while True:
            self._set_bound(weights, n, factor)
            self._cache = {k: self._pass(weights[k], self.masks[k], None, prune=True, grow=False)[0] for k in weights}
            self.full_scans += 1
            if sum(int(p.numel()) for p, _ in self._cache.values()) >= n or self._bound == math.inf:
                return
            factor *= 2

    def _apply(self, name: str, t, w: Tensor, pruned: Tensor, grown: Tensor, values: Tensor) -> None:
        """Write one table's exchange: the mask; pruned weights and their element-wise optimizer state
        to 0; grown weights back to the value they trained to (the pass zeroed them); grown weights
        with |w| <= H join the prune cache (it holds every active weight up to H)."""
        if pruned.numel() == 0 and grown.numel() == 0:
            return
        counts = self._counts()  # counted before the mask changes (the first call counts the mask)
        mask = self.masks[name]
        mask.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
        w.view(-1).index_fill_(0, pruned, 0).index_copy_(0, grown, values.to(w.dtype))
        counts[name] += int(grown.numel()) - int(pruned.numel())
        for st in t.optimizer_states():
            if st.kind == "element":
                st.tensor.view(-1).index_fill_(0, pruned, 0)
        if self._cache is not None:
            a = values.abs().float()
            low = a.le(self._bound)
            pos, val = self._cache[name]
            self._cache[name] = (torch.cat([pos, grown.masked_select(low)]), torch.cat([val, a.masked_select(low)]))

    @torch.no_grad()
    def _update_tables(self, n: int) -> int:
        """The update where tables are sharded, on several ranks or densely trained: the same rule on
        whole tables (|w| joined across ranks: the drift of inactive weights is the growth evidence),
        written shard by shard (grown weights keep their value, the rest of the inactive ones go to 0)."""
        full = self._ranking_weights()
        moved = 0
        if n > 0:
            evidence = {k: w.abs().float().masked_fill_(self.masks[k], 0) for k, w in full.items()}
            changes = exchange_positions(full, self.masks, evidence, n)
            for name, (pruned, grown) in changes.items():
                self.masks[name].view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
                t = self.tables[name]
                changed = Changes(self.masks[name], pruned, grown[:0])
                for st in t.optimizer_states():
                    if st.kind == "element":
                        changed.zero(st.tensor, t.shards[st.shard])
                moved += int(grown.numel())
            self._active = None
        self._project()
        self._cache = None
        return moved

    @torch.no_grad()
    def _project(self) -> None:
        """Zero every inactive weight: one `masked_fill_` per shard (a bool fill is vectorised; a float
        multiply by a bool mask is not)."""
        for name, t in self.tables.items():
            for shard in t.shards:
                rs, cs = shard.full
                shard.tensor.masked_fill_(self.masks[name][rs, cs].logical_not(), 0)


def _positions(idx: Tensor, r0: int, rows: Tensor | None, dim: int) -> Tensor:
    """Flat table positions of flat chunk positions `idx` (chunk rows from `r0`, or the given `rows`)."""
    if rows is None:
        return idx + r0 * dim
    return rows.index_select(0, idx // dim).mul_(dim).add_(idx % dim)


def _cat2(pos: list[Tensor], val: list[Tensor], empty: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    if not pos:
        return empty
    return (torch.cat(pos), torch.cat(val)) if len(pos) > 1 else (pos[0], val[0])


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

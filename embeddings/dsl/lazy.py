"""Lazy DSL (`dsl.mode: lazy`): the budget is enforced at every update and at the end, not between.

Periodic projection instead of a per-step mask, as in DeepLight (Deng et al., WSDM 2021: prune by
magnitude every few iterations, weights train freely between) and AC/DC (Peste et al., NeurIPS
2021: alternating dense and fixed-support phases match sparse-training quality); the official DSL
code (shuyao-wang/DSL, `LightGCN/utils/core.py`, `Masking`) multiplies the whole table by the
mask after every step, which this makes periodic.

Per step:
- bags of one id keep the hook mask of `exact` (their pooled gradient IS the row's gradient, so
  masking it is cheap and keeps row-wise optimizer state clean);
- rows of longer bags are NOT re-masked: their inactive weights may drift from zero until the
  next update;
- gradient evidence is accumulated only on `grad_steps` sampled steps of each interval (default
  `DEFAULT_GRAD_STEPS`).
Per update (every ΔT steps): the prune/grow of `exact` (sampled-threshold candidate selection,
`masks.exchange_positions`; pruned and grown weights and their element-wise state are zeroed, as
in `exact`), then ONE pass zeroing every inactive weight of every table (what drifted).
Final exact phase: the last `cfg.final_exact_steps` steps (default one interval, ΔT) run as
`exact` (the tables are projected once when it starts, then touched rows are re-masked per step),
so the trained and exported model honours the budget exactly.

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

import torch
from torch import Tensor

import math

from embeddings.dsl.controller import DSLController
from embeddings.dsl.hooks import TableLookup, resolved, sampled_steps, table_lookups
from embeddings.dsl.masks import _grow_positions, _sample_stride, pick
from embeddings.dsl.remask import is_distributed
from embeddings.dsl.schedule import exchange_fraction

__all__ = ["LazyDSLController", "DEFAULT_GRAD_STEPS"]

DEFAULT_GRAD_STEPS = 10  # sampled accumulating steps per interval when cfg.grad_steps is None
_PASS_CHUNK_BYTES = 1 << 21  # the update pass walks each table in chunks of about this many bytes
_SAMPLE = 1 << 16            # |w| samples that bracket the prune threshold


class LazyDSLController(DSLController):
    """`DSLController` with periodic projection (see the module docstring); same constructor and API."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[str, list[Tensor]] = {name: [] for name in self.tables}

    @property
    def exact_from(self) -> int:
        """First 0-based step of the final exact phase."""
        tail = self.cfg.final_exact_steps if self.cfg.final_exact_steps is not None else self.cfg.update_every
        return max(0, self.total_steps - tail)

    def _exact_phase(self) -> bool:
        return self._steps_done >= self.exact_from

    def observe(self, kjt, pooled) -> None:
        """The one-id bag gradient mask, and on sampled steps the evidence hook; no re-mask bookkeeping
        (in the final exact phase: `DSLController.observe`)."""
        if self._exact_phase():
            return super().observe(kjt, pooled)
        pooled = resolved(pooled)
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        if not values.requires_grad:
            return
        accumulates = self._accumulates()
        lookups = table_lookups(kjt, pooled, self.tables, self._feature_table, self.masks, collect_remask=False)
        if lookups and (accumulates or any(lk.grad_masks for lk in lookups)):
            values.register_hook(lambda grad, lookups=lookups, acc=accumulates: self._on_grad(grad, lookups, acc))

    def after_step(self, step: int) -> dict:
        """Every ΔT steps: prune/grow, then one pass zeroing every inactive weight. Entering the final
        exact phase: project once; from there on as `DSLController.after_step`."""
        if self._exact_phase():
            return super().after_step(step)
        self._since_update += 1
        self._steps_done = step + 1
        stats: dict = {"step": step, "updated": False, "fraction": 0.0, "exchanged": 0, "budget": self.budget}
        if (step + 1) % self.cfg.update_every == 0:
            self._since_update = 0
            fraction = exchange_fraction(step + 1, self.total_steps, self.cfg)
            n = int(round(fraction * self.budget))
            moved = self._one_pass_update(n)
            if moved is None:  # sharded / multi-rank / densely trained tables: exact's selection, then project
                moved = self._prune_and_grow(n) if n > 0 else 0
                self._project()
            for acc in self.grad_acc.values():
                acc.zero_()
            for seen in self._seen.values():
                seen.clear()
            self.updates += 1
            self.exchanged_total += moved
            stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                         density=self.density_by_table(), embedding_bytes=self.live_bytes())
        elif self._exact_phase():  # the next step is the first exact one: start it projected
            self._project()
        return stats

    def _on_grad(self, grad: Tensor, lookups: list[TableLookup], accumulate_: bool) -> Tensor:
        out = super()._on_grad(grad, lookups, accumulate_)
        if accumulate_ and not self._exact_phase():  # the rows with evidence: the only grow candidates
            for lk in lookups:
                if lk.seen is not None:
                    self._seen[lk.table].append(lk.seen)
        return out

    @torch.no_grad()
    def _one_pass_update(self, n: int) -> int | None:
        """The update on whole local tables in one pass over each table (None where it does not
        apply: sharded or replicated-across-ranks tables, tables with a dense optimizer).

        Grow: the `n` largest accumulated magnitudes among the inactive weights of the rows seen on
        accumulating steps (exact `pick` on that small pool). Prune: as many active weights of
        smallest |w|, ranked exactly: a strided sample brackets the threshold, then ONE pass over
        each table (in cache-sized chunks) zeroes the inactive weights (the projection), and collects
        the active weights below the bracket and inside it; the k-th value of the bracket settles
        it. Ties go to the lower (table, position), as in `exact` (`masks.exchange_positions`), so
        both modes choose the same weights from the same weights and evidence."""
        if is_distributed():
            return None
        weights = {}
        for name, t in self.tables.items():
            w = t.shards[0].tensor if len(t.shards) == 1 else None
            if w is None or t.dense_param is not None or w.shape != self.masks[name].shape or not w.is_contiguous():
                return None
            weights[name] = w
        grown = self._grow_from_seen(n)
        n = sum(int(g.numel()) for g in grown.values())
        pruned = self._prune_pass(weights, n)
        if pruned is None:  # the sampled bracket missed (very unlikely): exact's selection on the projected tables
            from embeddings.dsl.masks import _prune_positions

            names = list(self.tables)
            pruned = dict(zip(names, _prune_positions([weights[k] for k in names], [self.masks[k] for k in names], n, 1 << 18)))
        for name, t in self.tables.items():
            self._apply(name, t, weights[name], pruned[name], grown[name])
        return n

    def _grow_from_seen(self, n: int) -> dict[str, Tensor]:
        """exact's grow rule (`masks._grow_positions`: a sampled threshold, then an exact pick) on the
        rows seen on accumulating steps only (no other row has evidence), mapped back to table positions."""
        names = list(self.tables)
        rows, subs, sub_masks = [], [], []
        for name in names:
            mask = self.masks[name]
            parts = self._seen[name]
            r = _unique_rows(parts, mask.shape[0]) if parts else torch.zeros(0, dtype=torch.long, device=mask.device)
            rows.append(r)
            subs.append(self.grad_acc[name].index_select(0, r))
            sub_masks.append(mask.index_select(0, r))
        inactive = sum(int(m.numel() - torch.count_nonzero(m)) for m in sub_masks)
        if n <= 0 or inactive == 0:
            return {name: r[:0] for name, r in zip(names, rows)}
        found = _grow_positions(subs, sub_masks, n, inactive, 1 << 18)
        out = {}
        for name, r, pos in zip(names, rows, found):
            dim = self.masks[name].shape[1]
            out[name] = r.index_select(0, pos // dim).mul_(dim).add_(pos % dim)
        return out

    def _prune_pass(self, weights: dict[str, Tensor], n: int) -> dict[str, Tensor] | None:
        names = list(weights)
        total = sum(w.numel() for w in weights.values())
        stride = _sample_stride(total, [w.shape[1] for w in weights.values()], _SAMPLE)
        sample = torch.cat([weights[k].view(-1)[::stride][self.masks[k].view(-1)[::stride]].abs().float() for k in names])
        if torch.isnan(sample).any():
            raise ValueError("DSL prune/grow met NaN embedding weights; training diverged before the mask update")
        lo = hi = None
        if n > 0 and sample.numel():
            ns, active = sample.numel(), max(1, self.budget)
            expected = n * ns / active
            margin = 6.0 * math.sqrt(expected * max(0.0, 1.0 - n / active)) + 8.0
            lo_rank, hi_rank = int(expected - margin), int(math.ceil(expected + margin))
            lo = float(torch.kthvalue(sample, lo_rank).values) if lo_rank >= 1 else None
            hi = float(torch.kthvalue(sample, hi_rank).values) if hi_rank <= ns else None
        below: dict[str, list[Tensor]] = {k: [] for k in names}
        band_pos: dict[str, list[Tensor]] = {k: [] for k in names}
        band_val: list[Tensor] = []
        for name in names:
            w, mask = weights[name], self.masks[name]
            rows, dim = w.shape
            step = max(1, _PASS_CHUNK_BYTES // max(1, dim * w.element_size()))
            for r0 in range(0, rows, step):
                wc, mc = w[r0:r0 + step], mask[r0:r0 + step]
                wc.masked_fill_(mc.logical_not(), 0)  # the projection, fused into the pass
                if n == 0:
                    continue
                a = wc.abs()
                inside = mc if hi is None else mc & (a <= hi)
                if lo is not None:
                    low = mc & (a < lo)
                    below[name].append(low.view(-1).nonzero().squeeze(1).add_(r0 * dim))
                    inside = inside & ~low
                idx = inside.view(-1).nonzero().squeeze(1)
                band_pos[name].append(idx + r0 * dim)
                band_val.append(a.view(-1).index_select(0, idx).float())
        empty = {k: torch.zeros(0, dtype=torch.long, device=weights[k].device) for k in names}
        if n == 0:
            return empty
        below_t = {k: torch.cat(v) if v else empty[k] for k, v in below.items()}
        band_t = {k: torch.cat(v) if v else empty[k] for k, v in band_pos.items()}
        values = torch.cat(band_val) if band_val else torch.zeros(0)
        k = n - sum(int(v.numel()) for v in below_t.values())
        if k < 0 or k > values.numel():
            return None
        chosen = pick(values, k, largest=False) if k else torch.zeros(values.numel(), dtype=torch.bool)
        parts = chosen.split([int(band_t[x].numel()) for x in names])
        return {x: torch.cat([below_t[x], band_t[x][c]]).sort().values for x, c in zip(names, parts)}

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

    def _accumulates(self) -> bool:
        """As `DSLController._accumulates`, with `DEFAULT_GRAD_STEPS` sampled steps when `cfg.grad_steps` is None."""
        every, pos = self.cfg.update_every, self._since_update
        span = every if self.cfg.grad_window is None else min(self.cfg.grad_window, every)
        if pos < every - span:
            return False
        interval = self._steps_done // every
        if exchange_fraction((interval + 1) * every, self.total_steps, self.cfg) <= 0:
            return False
        k = self.cfg.grad_steps or DEFAULT_GRAD_STEPS
        if k >= span:
            return True
        if self._sampled[0] != interval:
            self._sampled = (interval, sampled_steps(every - span, span, k, self._seed, interval))
        return pos in self._sampled[1]


def _unique_rows(parts: list[Tensor], rows: int) -> Tensor:
    """Sorted unique row numbers of `parts`: through a row bitmap when the table is not much larger
    than the ids (a scan instead of a sort), else `torch.unique`."""
    ids = torch.cat(parts) if len(parts) > 1 else parts[0]
    if rows > 8 * ids.numel():
        return torch.unique(ids)
    seen = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    seen.index_fill_(0, ids, True)
    return seen.nonzero().squeeze(1)

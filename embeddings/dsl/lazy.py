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

from embeddings.dsl.controller import DSLController
from embeddings.dsl.hooks import resolved, sampled_steps, table_lookups
from embeddings.dsl.schedule import exchange_fraction

__all__ = ["LazyDSLController", "DEFAULT_GRAD_STEPS"]

DEFAULT_GRAD_STEPS = 10  # sampled accumulating steps per interval when cfg.grad_steps is None


class LazyDSLController(DSLController):
    """`DSLController` with periodic projection (see the module docstring); same constructor and API."""

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
            moved = self._prune_and_grow(n) if n > 0 else 0
            for acc in self.grad_acc.values():
                acc.zero_()
            self.updates += 1
            self.exchanged_total += moved
            self._project()
            stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                         density=self.density_by_table())
        elif self._exact_phase():  # the next step is the first exact one: start it projected
            self._project()
        return stats

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

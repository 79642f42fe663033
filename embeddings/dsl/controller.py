"""Dynamic Sparse Learning (Wang et al., WSDM 2024) on TorchRec / FBGEMM embedding tables.

Tables train sparse from step 0 under a fixed budget of active weights. Each table has a bool
mask (initialised at the target density, uniformly or frequency-aware); every ΔT steps the active
weights of smallest |w| are pruned and as many inactive weights with the largest gradient magnitude
accumulated over the interval are grown; the exchanged share follows a cosine schedule that reaches
0 at `cfg.end_fraction` of training; ranking is global across tables.

Works where gradients are never materialised (FBGEMM fused optimizer in backward, inside
DistributedModelParallel): the gradient of the pooled output (a hook on the KeyedTensor) is
scattered back to the rows the batch looked up, using the KJT's ids and offsets. Whole tables are
touched only at an update.

Keeping inactive weights at zero, per step:
- bags of one id (every categorical feature of a Criteo-like log): the pooled gradient of the bag
  IS the row's gradient, so the hook multiplies it by the id's mask row. The fused optimizer then
  moves no inactive weight (SGD, row-wise Adagrad and Adam all step 0 for a zero gradient and
  zero state), nothing is re-masked, and row-wise optimizer state sees only active weights;
- bags of several ids share one pooled gradient, so their rows are re-masked after the step:
  made unique (a row bitmap or a sort) and multiplied by the mask in cache-sized chunks.
On accumulating steps the hook also adds the per-row gradient magnitude (one `embedding_bag` over
the ids grouped by row, taken before the masking) to the accumulator. `cfg.grad_steps`
accumulates on k seeded steps spread over each interval instead of every step.
Per update: candidates only: |w| at the active positions and the accumulated magnitude of
inactive weights in rows that can hold one above a sampled threshold, each ranked by an exact
k-th value (`embeddings.dsl.masks.exchange_positions`), then positions are written, no table-wide sort.

Optimizer state: element-wise state (Adam moments, ...) is zeroed at every pruned and grown
weight. Row-wise state (FBGEMM row-wise Adagrad keeps one value per row, shared by the row's
weights) cannot be reset per weight; it is zeroed for the rows where no weight that was active
before the update is still active after it (rows that became empty, rows grown from empty, rows
whose active set was replaced entirely). Rows that keep a surviving weight keep their state, so a
survivor never takes an un-damped Adagrad step.

Example (a plain EmbeddingBagCollection; with DMP pass the DMP model instead):
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> from embeddings.config import DSLConfig
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"])])
    >>> dsl = DSLController(ebc, DSLConfig(enabled=True, density=0.5, update_every=2, init="random"), total_steps=10)
    >>> (dsl.budget, dsl.active_weights())
    (20, 20)
    >>> opt = torch.optim.SGD(ebc.parameters(), lr=0.1)
    >>> for step in range(4):
    ...     kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([step, 7, 8]), lengths=torch.tensor([2, 1]))
    ...     pooled = ebc(kjt)
    ...     dsl.observe(kjt, pooled)
    ...     pooled.values().pow(2).sum().backward(); opt.step(); opt.zero_grad()
    ...     stats = dsl.after_step(step)
    >>> (stats["updated"], dsl.active_weights(), int((ebc.embedding_bags["t"].weight != 0).sum()) <= dsl.budget)
    (True, 20, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from embeddings.config import DSLConfig
from embeddings.dsl.hooks import TableLookup, accumulate, mask_gradient, masked_grad, resolved, table_lookups
from embeddings.dsl.masks import active_count, exchange_positions, frequency_mask, random_mask
from embeddings.dsl.remask import Changes, gather_rows, is_distributed, remask_rows, unique_rows
from embeddings.dsl.steps import StepClock
from embeddings.dsl.tables import DSLError, DSLTable, find_tables, live_bytes

__all__ = ["DSLController"]


class DSLController(StepClock):
    """Keeps every embedding table of a model sparse under one global budget of active weights.

    Args:
        model_or_ebc: a model holding TorchRec EmbeddingBagCollections, a DMP-wrapped model, an
            EBC, or a bare FBGEMM SplitTableBatchedEmbeddingBagsCodegen.
        cfg: the `dsl` section of the embeddings config.
        total_steps: optimizer steps of the whole training (for the schedule).
        frequencies: id counts per table (or per feature of the table), for `cfg.init == "frequency"`.
        tables: only these tables are made sparse (default: all found).
        densities: per-table target density overriding `cfg.density` (e.g. the plan's `dsl_density`).
        optimizers: non-fused torch optimizers whose state should be reset (fused FBGEMM ones and
            `apply_optimizer_in_backward` ones are found on their own).
        seed: for the initial masks.

    Per training step: `observe(kjt, pooled)` after the forward (registers the gradient hook), then
    backward and optimizer step, then `after_step(step)`.
    """

    masks_dense_gradients = True  # a densely trained table's gradient is masked (lazy mode lets it drift)

    def __init__(self, model_or_ebc: nn.Module, cfg: DSLConfig, total_steps: int,
                 frequencies: Mapping[str, Tensor] | None = None, *, tables: Iterable[str] | None = None,
                 densities: Mapping[str, float] | None = None, optimizers: Iterable[torch.optim.Optimizer] = (),
                 seed: int = 0) -> None:
        if total_steps <= 0:
            raise DSLError(f"DSL needs total_steps > 0, got {total_steps}")
        if cfg.init not in ("random", "frequency"):
            raise DSLError(f"dsl.init is {cfg.init!r}; use 'random' or 'frequency'")
        found = find_tables(model_or_ebc, optimizers)
        wanted = list(found) if tables is None else list(tables)
        missing = [t for t in wanted if t not in found]
        if missing:
            raise DSLError(f"DSL tables {missing} are not in the model (tables found: {sorted(found)})")
        StepClock.__init__(self, cfg, total_steps, seed)
        self.tables: dict[str, DSLTable] = {t: found[t] for t in wanted}
        self._feature_table = {f: t.name for t in self.tables.values() for f in t.features}
        densities = dict(densities or {})
        counts = self._table_counts(frequencies) if cfg.init == "frequency" else {}
        gen = torch.Generator().manual_seed(seed)
        self.masks: dict[str, Tensor] = {}
        self.grad_acc: dict[str, Tensor] = {}
        self.budget = 0
        for name, t in self.tables.items():
            n = active_count(densities.get(name, cfg.density), t.rows, t.dim)
            device = self._device(t)
            if name in counts:
                self.masks[name] = frequency_mask(t.rows, t.dim, n, counts[name], gen, device)
            else:
                self.masks[name] = random_mask(t.rows, t.dim, n, gen, device)
            self.grad_acc[name] = torch.zeros(t.rows, t.dim, dtype=torch.float32, device=device)
            self.budget += n
        self._touched: dict[str, list[TableLookup]] = {name: [] for name in self.tables}
        for name, t in self.tables.items():
            if t.dense_param is not None and self.masks_dense_gradients:
                mask_gradient(t.dense_param, self.masks[name])
        self.updates = 0
        self.exchanged_total = 0
        self._apply_full_masks()

    # -- public API -------------------------------------------------------------------------

    def observe(self, kjt, pooled) -> None:
        """Record this batch's rows and register gradient accumulation (after the forward, before backward).

        `pooled` is the EBC output (a KeyedTensor; for a bare TBE its [batch, sum of dims] tensor).
        The looked-up rows are recorded for re-masking after the step. On accumulating steps (see
        `_accumulates`), a hook on `pooled` turns its gradient into the gradient of each looked-up
        row (sum pooling: the sum of its bags' gradients; mean: each divided by the bag length;
        weighted: times the id's weight), with one `embedding_bag` over the ids sorted by row, and
        adds its magnitude to the table's accumulator. No dense table-sized gradient is formed.
        """
        pooled = resolved(pooled)
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        lookups = table_lookups(kjt, pooled, self.tables, self._feature_table, self.masks)
        for lk in lookups:
            self._touched[lk.table].append(lk)
        if not lookups or not values.requires_grad:
            return
        accumulates = self._accumulates()
        if accumulates or any(lk.grad_masks for lk in lookups):
            values.register_hook(lambda grad, lookups=lookups, acc=accumulates: self._on_grad(grad, lookups, acc))

    def after_step(self, step: int) -> dict:
        """After the optimizer step of step `step` (0-based): re-mask the rows this batch touched, and
        every `cfg.update_every` steps (when `(step + 1) % update_every == 0`) prune and grow.

        Returns {"step", "updated", "fraction", "exchanged", "budget"} (+ "scheduled", "active",
        "density" on updates). `exchanged` may be below `scheduled` (fraction x budget): only inactive
        weights with gradient evidence are grown, and as many are pruned.
        """
        self._mask_touched_rows()
        stats, fraction = self.tick(step, self.budget)
        if fraction is None:
            return stats
        n = int(round(fraction * self.budget))
        moved = self._prune_and_grow(n) if n > 0 else 0
        for acc in self.grad_acc.values():
            acc.zero_()
        self.updates += 1
        self.exchanged_total += moved
        stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                     density=self.density_by_table(), embedding_bytes=self.live_bytes())
        return stats

    def live_bytes(self) -> int:
        """Bytes of this rank's live DSL training tensors: weights, optimizer state, masks, accumulators."""
        return live_bytes(self.tables.values(), self.masks, self.grad_acc)

    def active_weights(self) -> int:
        """Active weights over all DSL tables (never above `budget`)."""
        return sum(int(torch.count_nonzero(m)) for m in self.masks.values())

    def density_by_table(self) -> dict[str, float]:
        """Active share of each table's weights."""
        return {name: float(torch.count_nonzero(m)) / m.numel() for name, m in self.masks.items()}

    def state_dict(self) -> dict:
        """Masks, gradient accumulators and counters, for checkpoints (plain tensors, `weights_only`-safe)."""
        return {"masks": {k: v.clone() for k, v in self.masks.items()},
                "grad_acc": {k: v.clone() for k, v in self.grad_acc.items()},
                "budget": self.budget, "updates": self.updates, "exchanged_total": self.exchanged_total,
                "since_update": self._since_update, "steps_done": self._steps_done}

    def load_state_dict(self, d: Mapping) -> None:
        """Restore from `state_dict()` and re-apply the masks to the weights."""
        if set(d["masks"]) != set(self.masks):
            raise DSLError(f"DSL checkpoint has tables {sorted(d['masks'])}, the model has {sorted(self.masks)}")
        for name, m in d["masks"].items():
            if m.shape != self.masks[name].shape:
                raise DSLError(f"DSL checkpoint mask of table {name!r} is {tuple(m.shape)}, "
                                 f"the table is {tuple(self.masks[name].shape)}")
            self.masks[name].copy_(m)
            self.grad_acc[name].copy_(d["grad_acc"][name])
        self.budget, self.updates = int(d["budget"]), int(d["updates"])
        self.exchanged_total = int(d.get("exchanged_total", 0))
        self._since_update = int(d.get("since_update", 0))
        self._steps_done = int(d.get("steps_done", 0))
        self._apply_full_masks()

    @torch.no_grad()
    def full_weights(self) -> dict[str, Tensor]:
        """Every DSL table as one full [rows, dim] fp32 tensor (shards joined; across ranks summed,
        which is exact because sharded pieces are disjoint and the rest is zero-filled)."""
        out = {}
        for name, t in self.tables.items():
            full = torch.zeros(self.masks[name].shape, dtype=torch.float32, device=self.masks[name].device)
            for shard in t.shards:
                rs, cs = shard.full
                full[rs, cs] = shard.tensor.detach().float()
            if is_distributed() and not t.replicated:
                dist.all_reduce(full, op=dist.ReduceOp.SUM)
            out[name] = full
        return out

    def export_pruned(self, serving: str = "fp16") -> list:
        """The `pruned` inference tables (fully pruned rows removed, rows stored as `serving`):
        a list of `embeddings.compression.prune.PrunedTable`, ready for `serving_tbe`."""
        from embeddings.compression.prune import export_dsl_tables

        return export_dsl_tables(self.full_weights(), self.masks, serving=serving)

    # -- internals --------------------------------------------------------------------------

    def _device(self, table: DSLTable) -> torch.device:
        """Where a table's mask lives: beside its local shards (a rank may hold none of a table)."""
        for t in [table, *self.tables.values()]:
            if t.shards:
                return t.shards[0].tensor.device
        return torch.device("cpu")

    def _table_counts(self, frequencies: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        if not frequencies:
            raise DSLError("embeddings.dsl.init is 'frequency' but DSLController got no id frequencies; pass "
                           "frequencies= (table or feature name -> count per id, e.g. the vocab stage's counts) "
                           "or set embeddings.dsl.init: random")
        counts: dict[str, Tensor] = {}
        for key, c in frequencies.items():
            table = key if key in self.tables else self._feature_table.get(key)
            if table is None:
                continue
            c = torch.as_tensor(c).double().cpu()
            if c.shape != (self.tables[table].rows,):
                raise DSLError(f"frequencies[{key!r}] has {tuple(c.shape)} counts; table {table!r} has "
                                 f"{self.tables[table].rows} rows: give one count per row")
            counts[table] = counts[table] + c if table in counts else c
        return counts

    def _on_grad(self, grad: Tensor, lookups: list[TableLookup], accumulate_: bool) -> Tensor:
        """The pooled output's gradient hook: accumulate the rows' gradient magnitude from the whole
        gradient, then return it with the inactive weights of one-id bags zeroed."""
        if accumulate_:
            accumulate(grad, lookups, self.grad_acc)
        return masked_grad(grad, lookups)

    @torch.no_grad()
    def _mask_touched_rows(self) -> None:
        distributed = is_distributed()
        for name, parts in self._touched.items():
            if not parts and not distributed:  # across ranks every rank joins every gather, in order
                continue
            mask = self.masks[name]
            rows = unique_rows(parts, mask)
            parts.clear()
            if self.tables[name].dense_param is not None:
                # a dense optimizer steps every row (momentum moves untouched ones too, e.g. when its
                # state was not handed to us): re-mask the whole table, as cheap as that step itself
                for shard in self.tables[name].shards:
                    rs, cs = shard.full
                    shard.tensor.mul_(mask[rs, cs].view(torch.uint8))
                continue
            rows = gather_rows(rows)
            if rows.numel() == 0:  # one-id bags only: their gradient was masked, nothing to re-mask
                continue
            for shard in self.tables[name].shards:
                remask_rows(shard, mask, rows)

    @torch.no_grad()
    def _apply_full_masks(self) -> None:
        for name, t in self.tables.items():
            for shard in t.shards:
                rs, cs = shard.full
                shard.tensor.mul_(self.masks[name][rs, cs])

    @torch.no_grad()
    def _ranking_weights(self) -> dict[str, Tensor]:
        """Every table as one full tensor to rank |w| on: the local tensor itself when it is the whole
        table, else the shards joined (|w|; across ranks combined with MAX, exact because |w| >= 0
        and replicated copies are equal)."""
        out = {}
        for name, t in self.tables.items():
            if len(t.shards) == 1 and t.shards[0].tensor.shape == self.masks[name].shape and (t.replicated or not is_distributed()):
                out[name] = t.shards[0].tensor.detach()
                continue
            full = torch.zeros(self.masks[name].shape, dtype=torch.float32, device=self.masks[name].device)
            for shard in t.shards:
                rs, cs = shard.full
                full[rs, cs] = shard.tensor.detach().abs().float()
            if is_distributed() and not t.replicated:
                dist.all_reduce(full, op=dist.ReduceOp.MAX)
            out[name] = full
        return out

    @torch.no_grad()
    def _prune_and_grow(self, n: int) -> int:
        """One update of at most `n` exchanges; returns how many weights moved."""
        if is_distributed():  # every rank saw a different batch: sum the evidence so all ranks agree
            for acc in self.grad_acc.values():
                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        changes = exchange_positions(self._ranking_weights(), self.masks, self.grad_acc, n)
        for name, (pruned, grown) in changes.items():
            t, mask = self.tables[name], self.masks[name]
            mask.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
            # the accumulator is zeroed right after this update: its storage holds the bitmaps
            changed = Changes(mask, pruned, grown, scratch=self.grad_acc[name])
            for shard in t.shards:  # pruned -> 0, regrown weights start at 0 too
                changed.zero(shard.tensor, shard)
            for st in t.optimizer_states():
                shard = t.shards[st.shard]
                if st.kind == "element":
                    changed.zero(st.tensor, shard)
                else:  # the row's state is shared by this shard's columns: reset when none survived
                    st.tensor.masked_fill_(changed.rows_without_survivor(shard), 0)
        return sum(int(grown.numel()) for _, grown in changes.values())


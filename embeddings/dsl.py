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
k-th value (`masks.exchange_positions`), then positions are written, no table-wide sort.

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
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from embeddings.config import DSLConfig
from embeddings.dsl_schedule import exchange_fraction
from embeddings.dsl_tables import DSLError, DSLTable, find_tables
from embeddings.masks import active_count, exchange_positions, frequency_mask, prune_and_grow, random_mask

__all__ = ["DSLController", "exchange_fraction", "prune_and_grow"]


# Re-masking on CPU goes through the touched rows in chunks of about this many bytes: the gathered
# rows stay in cache until they are written back (about 2x faster than one gather of all rows).
_REMASK_CHUNK_BYTES = 1 << 19


@dataclass
class _TableLookup:
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


class DSLController:
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
        self.cfg, self.total_steps = cfg, total_steps
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
        self._touched: dict[str, list[_TableLookup]] = {name: [] for name in self.tables}
        self._seed = seed
        self._sampled: tuple[int, frozenset[int]] = (-1, frozenset())
        for name, t in self.tables.items():
            if t.dense_param is not None:
                _mask_gradient(t.dense_param, self.masks[name])
        self.updates = 0
        self.exchanged_total = 0
        self._since_update = 0
        self._steps_done = 0
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
        pooled = _resolved(pooled)
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        lookups = self._lookups(kjt, pooled)
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
        self._since_update += 1
        self._steps_done = step + 1
        stats: dict = {"step": step, "updated": False, "fraction": 0.0, "exchanged": 0, "budget": self.budget}
        if (step + 1) % self.cfg.update_every != 0:
            return stats
        self._since_update = 0
        fraction = exchange_fraction(step + 1, self.total_steps, self.cfg)
        n = int(round(fraction * self.budget))
        moved = self._prune_and_grow(n) if n > 0 else 0
        for acc in self.grad_acc.values():
            acc.zero_()
        self.updates += 1
        self.exchanged_total += moved
        stats.update(updated=True, fraction=fraction, exchanged=moved, scheduled=n, active=self.active_weights(),
                     density=self.density_by_table())
        return stats

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
            if _distributed() and not t.replicated:
                dist.all_reduce(full, op=dist.ReduceOp.SUM)
            out[name] = full
        return out

    def export_pruned(self, serving: str = "fp16") -> list:
        """The `pruned` inference tables (fully pruned rows removed, rows stored as `serving`):
        a list of `embeddings.compression.prune.PrunedTable`, ready for `serving_tbe`."""
        from embeddings.compression.prune import export_dsl_tables

        return export_dsl_tables(self.full_weights(), self.masks, serving=serving)

    # -- internals --------------------------------------------------------------------------

    def _accumulates(self) -> bool:
        """Whether this step's gradient magnitude is accumulated: inside the window (`cfg.grad_window`
        steps before each update, or the whole interval), while the schedule still exchanges weights,
        and, with `cfg.grad_steps = k`, on one seeded random step in each of k equal parts of the window."""
        every, pos = self.cfg.update_every, self._since_update
        span = every if self.cfg.grad_window is None else min(self.cfg.grad_window, every)
        if pos < every - span:
            return False
        # once the schedule has ended no update exchanges anything: stop accumulating
        interval = self._steps_done // every
        if exchange_fraction((interval + 1) * every, self.total_steps, self.cfg) <= 0:
            return False
        k = self.cfg.grad_steps
        if k is None or k >= span:
            return True
        if self._sampled[0] != interval:
            self._sampled = (interval, sampled_steps(every - span, span, k, self._seed, interval))
        return pos in self._sampled[1]

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

    @torch.no_grad()
    def _lookups(self, kjt, pooled) -> list[_TableLookup]:
        """Per DSL table in the batch: its ids and where their gradients come from (cheap slicing only)."""
        if not isinstance(pooled, Tensor):
            keys, dims = pooled.keys(), pooled.length_per_key()
            positions = {k: i for i, k in enumerate(kjt.keys())}
        else:  # a bare TBE: the KJT's features in order, named by position
            keys = list(range(len(kjt.keys())))
            dims = [self.tables[self._feature_table[i]].dim for i in keys]
            positions = {k: k for k in keys}
        lengths, offsets, weights, stride = kjt.lengths(), kjt.offset_per_key(), kjt.weights_or_none(), kjt.stride()
        values = kjt.values()
        parts: dict[str, tuple[list, list, list, list]] = {}
        col = 0
        for key, dim in zip(keys, dims):
            table = self._feature_table.get(key)
            if table is not None and key in positions:
                p = positions[key]
                lo, hi = offsets[p], offsets[p + 1]
                ids, feats, gmasks, remask = parts.setdefault(table, ([], [], [], []))
                fids, lens = values[lo:hi], lengths[p * stride:(p + 1) * stride]
                ids.append(fids)
                feats.append((col, dim, lens, weights[lo:hi] if weights is not None else None))
                self._split_bags(table, col, dim, fids, lens, gmasks, remask)
            col += dim
        return [_TableLookup(table, _cat(ids, ids[0]), feats, self.tables[table].pooling == "mean", gmasks, _cat(remask, ids[0]))
                for table, (ids, feats, gmasks, remask) in parts.items()]

    def _split_bags(self, table: str, col: int, dim: int, ids: Tensor, lens: Tensor,
                    gmasks: list, remask: list) -> None:
        """One feature's bags: those with one id get a gradient mask (the id's mask row), the ids of
        longer bags are kept for re-masking. A table with a dense optimizer re-masks all of itself.
        Deciding which bags are which reads the lengths on the host (one sync per feature on CUDA)."""
        if ids.numel() == 0:
            return
        if self.tables[table].dense_param is not None:
            remask.append(ids)
            return
        mask = self.masks[table]
        multi = lens > 1
        if not bool(multi.any()) and ids.numel() == lens.numel():  # every bag holds exactly one id
            gmasks.append((col, dim, mask.index_select(0, ids)))
            return
        if bool(multi.any()):
            remask.append(ids[torch.repeat_interleave(multi, lens)])
            if not bool((lens == 1).any()):
                return
        # one-id bags: the mask row of their id; other bags pass their gradient whole (longer bags'
        # rows are re-masked, an empty bag's gradient reaches no row)
        first = (torch.cumsum(lens, 0) - lens).clamp_(max=ids.numel() - 1)
        rows = mask.index_select(0, ids.index_select(0, first))
        gmasks.append((col, dim, rows.logical_or_(lens.ne(1).unsqueeze(1))))

    def _on_grad(self, grad: Tensor, lookups: list[_TableLookup], accumulate: bool) -> Tensor:
        """The pooled output's gradient hook: accumulate the rows' gradient magnitude from the whole
        gradient, then return it with the inactive weights of one-id bags zeroed."""
        if accumulate:
            self._accumulate(grad, lookups)
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
    def _accumulate(self, grad: Tensor, lookups: list[_TableLookup]) -> None:
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
            self.grad_acc[lk.table].index_add_(0, rows, per_row.abs_())
            if lk.remask.numel() == lk.ids.numel():  # every id is re-masked: reuse the unique rows
                lk.rows = rows

    @torch.no_grad()
    def _mask_touched_rows(self) -> None:
        distributed = _distributed()
        for name, parts in self._touched.items():
            if not parts and not distributed:  # across ranks every rank joins every gather, in order
                continue
            mask = self.masks[name]
            rows = _unique_rows(parts, mask)
            parts.clear()
            if self.tables[name].dense_param is not None:
                # a dense optimizer steps every row (momentum moves untouched ones too, e.g. when its
                # state was not handed to us): re-mask the whole table, as cheap as that step itself
                for shard in self.tables[name].shards:
                    rs, cs = shard.full
                    shard.tensor.mul_(mask[rs, cs].view(torch.uint8))
                continue
            rows = _gather_rows(rows)
            if rows.numel() == 0:  # one-id bags only: their gradient was masked, nothing to re-mask
                continue
            for shard in self.tables[name].shards:
                _remask_rows(shard, mask, rows)

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
            if len(t.shards) == 1 and t.shards[0].tensor.shape == self.masks[name].shape and (t.replicated or not _distributed()):
                out[name] = t.shards[0].tensor.detach()
                continue
            full = torch.zeros(self.masks[name].shape, dtype=torch.float32, device=self.masks[name].device)
            for shard in t.shards:
                rs, cs = shard.full
                full[rs, cs] = shard.tensor.detach().abs().float()
            if _distributed() and not t.replicated:
                dist.all_reduce(full, op=dist.ReduceOp.MAX)
            out[name] = full
        return out

    @torch.no_grad()
    def _prune_and_grow(self, n: int) -> int:
        """One update of at most `n` exchanges; returns how many weights moved."""
        if _distributed():  # every rank saw a different batch: sum the evidence so all ranks agree
            for acc in self.grad_acc.values():
                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        changes = exchange_positions(self._ranking_weights(), self.masks, self.grad_acc, n)
        for name, (pruned, grown) in changes.items():
            t, mask = self.tables[name], self.masks[name]
            mask.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
            # the accumulator is zeroed right after this update: its storage holds the bitmaps
            changed = _Changes(mask, pruned, grown, scratch=self.grad_acc[name])
            for shard in t.shards:  # pruned -> 0, regrown weights start at 0 too
                changed.zero(shard.tensor, shard)
            for st in t.optimizer_states():
                shard = t.shards[st.shard]
                if st.kind == "element":
                    changed.zero(st.tensor, shard)
                else:  # the row's state is shared by this shard's columns: reset when none survived
                    st.tensor.masked_fill_(changed.rows_without_survivor(shard), 0)
        return sum(int(grown.numel()) for _, grown in changes.values())


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


def _unique_rows(parts: list[_TableLookup], mask: Tensor) -> Tensor:
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


def _cat(parts: list[Tensor], like: Tensor) -> Tensor:
    """`torch.cat` that returns a single part as it is, and no parts as an empty tensor like `like`."""
    if not parts:
        return like.new_zeros(0)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _remask_rows(shard, mask: Tensor, rows: Tensor) -> None:
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


class _Changes:
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
        return _any_per_row(self.changed()[rs, cs]) & ~_any_per_row(self._kept[rs, cs])


def _any_per_row(mask: Tensor) -> Tensor:
    """`mask.any(1)` for a bool table, through wider integer views (8 flags per int64 when the row
    allows it, else uint8 max): several times faster on CPU."""
    if not mask.shape[1]:
        return mask.any(1)
    m = mask.contiguous().view(torch.uint8)
    if m.shape[1] % 8 == 0:
        return m.view(torch.int64).ne(0).any(1)
    return m.amax(1).bool()


def _mask_gradient(param: Tensor, mask: Tensor) -> None:
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


def _resolved(pooled):
    """The KeyedTensor behind DMP's lazy awaitable output: the cached result the model already used
    (a second `wait()` would build a new tensor outside the autograd graph of the loss)."""
    if isinstance(pooled, Tensor) or not hasattr(pooled, "wait"):
        return pooled
    from torchrec.distributed.types import LazyAwaitable

    return LazyAwaitable._wait_async(pooled) if isinstance(pooled, LazyAwaitable) else pooled.wait()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_rows(rows: Tensor) -> Tensor:
    """Rows touched on any rank (a shard on this rank is updated by every rank's batch)."""
    if not _distributed():
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

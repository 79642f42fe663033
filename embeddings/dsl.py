"""Dynamic Sparse Learning (Wang et al., WSDM 2024) on TorchRec / FBGEMM embedding tables.

Tables train sparse from step 0 under a fixed budget of active weights. Each table has a bool
mask (initialised at the target density, uniformly or frequency-aware); every ΔT steps the active
weights of smallest |w| are pruned and as many inactive weights with the largest gradient magnitude
accumulated over the interval are grown; the exchanged share follows a cosine schedule that reaches
0 at `cfg.end_fraction` of training; ranking is global across tables.

Works where gradients are never materialised (FBGEMM fused optimizer in backward, inside
DistributedModelParallel): the gradient of the pooled output (a hook on the KeyedTensor) is
scattered back to the rows the batch looked up, using the KJT's ids and offsets. Per step only
the touched rows are accumulated and re-masked; whole tables are touched only at an update.

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
from torch import Tensor, nn

from embeddings.config import DSLConfig
from embeddings.dsl_schedule import exchange_fraction
from embeddings.dsl_tables import DSLError, DSLTable, find_tables
from embeddings.masks import active_count, frequency_mask, mask_changes, prune_and_grow, random_mask

__all__ = ["DSLController", "exchange_fraction", "prune_and_grow"]


@dataclass
class _TableLookup:
    """One table's share of a batch: the looked-up `ids` (KJT order, repeats kept) and, per feature,
    (first column in the pooled output, dim, bag lengths, id weights or None). Sorting and the
    bag index are only computed inside the gradient hook, i.e. only on steps that accumulate."""

    table: str
    ids: Tensor
    features: list[tuple[int, int, Tensor, Tensor | None]]
    mean: bool


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
        self._touched: dict[str, list[Tensor]] = {name: [] for name in self.tables}
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
        The looked-up rows are recorded for re-masking after the step. Within the gradient window
        (`cfg.grad_window` steps before each update, or always), a hook on `pooled` turns its
        gradient into the gradient of each looked-up row (sum pooling: the sum of its bags'
        gradients; mean: each divided by the bag length; weighted: times the id's weight) and adds
        its magnitude to the table's accumulator. No dense table-sized gradient is formed.
        """
        pooled = _resolved(pooled)
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        lookups = self._lookups(kjt, pooled)
        for lk in lookups:
            self._touched[lk.table].append(lk.ids)
        window, every = self.cfg.grad_window, self.cfg.update_every
        in_window = window is None or self._since_update + 1 > every - window
        # once the schedule has ended no update exchanges anything: stop accumulating
        next_update = (self._steps_done // every + 1) * every
        useful = exchange_fraction(next_update, self.total_steps, self.cfg) > 0
        if lookups and in_window and useful and values.requires_grad:
            values.register_hook(lambda grad, lookups=lookups: self._accumulate(grad, lookups))

    def after_step(self, step: int) -> dict:
        """After the optimizer step of step `step` (0-based): re-mask the rows this batch touched, and
        every `cfg.update_every` steps (when `(step + 1) % update_every == 0`) prune and grow.

        Returns {"step", "updated", "fraction", "exchanged", "budget"} (+ "active", "density" on updates).
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
        if n > 0:
            self._prune_and_grow(n)
        for acc in self.grad_acc.values():
            acc.zero_()
        self.updates += 1
        self.exchanged_total += n
        stats.update(updated=True, fraction=fraction, exchanged=n, active=self.active_weights(),
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
        parts: dict[str, tuple[list, list]] = {}
        col = 0
        for key, dim in zip(keys, dims):
            table = self._feature_table.get(key)
            if table is not None and key in positions:
                p = positions[key]
                lo, hi = offsets[p], offsets[p + 1]
                ids, feats = parts.setdefault(table, ([], []))
                ids.append(values[lo:hi])
                feats.append((col, dim, lengths[p * stride:(p + 1) * stride],
                              weights[lo:hi] if weights is not None else None))
            col += dim
        return [_TableLookup(table, torch.cat(ids) if len(ids) > 1 else ids[0], feats,
                             self.tables[table].pooling == "mean")
                for table, (ids, feats) in parts.items()]

    @torch.no_grad()
    def _accumulate(self, grad: Tensor, lookups: list[_TableLookup]) -> None:
        for lk in lookups:
            per_id = []
            for col, dim, lens, w in lk.features:
                bag = torch.repeat_interleave(torch.arange(lens.numel(), device=lens.device), lens)
                g = grad[:, col:col + dim].float().index_select(0, bag)
                scale = w.float() if w is not None else None
                if lk.mean:
                    inv_len = 1.0 / lens.clamp(min=1).to(torch.float32)[bag]
                    scale = inv_len if scale is None else scale * inv_len
                per_id.append(g if scale is None else g * scale[:, None])
            per_id_t = torch.cat(per_id) if len(per_id) > 1 else per_id[0]
            # per-row gradient of this step = sum over the row's ids; sorting makes the scatter local
            sorted_ids, order = lk.ids.sort()
            rows, inverse = torch.unique_consecutive(sorted_ids, return_inverse=True)
            per_row = torch.zeros(rows.numel(), per_id_t.shape[1], dtype=per_id_t.dtype, device=per_id_t.device)
            per_row.index_add_(0, inverse, per_id_t.index_select(0, order))
            self.grad_acc[lk.table].index_add_(0, rows, per_row.abs_())

    @torch.no_grad()
    def _mask_touched_rows(self) -> None:
        distributed = _distributed()
        for name, parts in self._touched.items():
            if not parts and not distributed:  # across ranks every rank joins every gather, in order
                continue
            mask = self.masks[name]
            rows = (torch.cat(parts) if len(parts) > 1 else parts[0]) if parts else mask.new_zeros(0, dtype=torch.long)
            parts.clear()
            if self.tables[name].dense_param is not None:
                # a dense optimizer steps every row (momentum moves untouched ones too, e.g. when its
                # state was not handed to us): re-mask the whole table, as cheap as that step itself
                for shard in self.tables[name].shards:
                    rs, cs = shard.full
                    shard.tensor.mul_(mask[rs, cs].view(torch.uint8))
                continue
            rows = _gather_rows(rows)
            for shard in self.tables[name].shards:
                r, c = shard.tensor.shape
                local = rows
                if shard.row_offset or r != mask.shape[0]:
                    local = rows[(rows >= shard.row_offset) & (rows < shard.row_offset + r)]
                m = mask.index_select(0, local)[:, shard.col_offset:shard.col_offset + c]
                local = local - shard.row_offset
                # repeated ids write the same values twice: cheaper than de-duplicating them first
                # (a bool mask viewed as uint8 multiplies on the vectorised path; bool * float does not)
                shard.tensor.index_copy_(0, local, shard.tensor.index_select(0, local).mul_(m.view(torch.uint8)))

    @torch.no_grad()
    def _apply_full_masks(self) -> None:
        for name, t in self.tables.items():
            for shard in t.shards:
                rs, cs = shard.full
                shard.tensor.mul_(self.masks[name][rs, cs])

    @torch.no_grad()
    def _global_magnitudes(self) -> dict[str, Tensor]:
        """|w| of every table as a full tensor; across ranks the local shards are combined with MAX
        (|w| >= 0 and replicated copies are equal, so MAX is exact)."""
        out = {}
        for name, t in self.tables.items():
            if len(t.shards) == 1 and t.shards[0].tensor.shape == self.masks[name].shape and (t.replicated or not _distributed()):
                out[name] = t.shards[0].tensor.detach().abs().float()
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
    def _prune_and_grow(self, n: int) -> None:
        if _distributed():  # every rank saw a different batch: sum the evidence so all ranks agree
            for acc in self.grad_acc.values():
                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        old = self.masks
        new = prune_and_grow(self._global_magnitudes(), old, self.grad_acc, n)
        for name, t in self.tables.items():
            pruned, grown = mask_changes(old[name], new[name])
            changed = pruned | grown
            kept = old[name] & new[name]
            either = old[name] | new[name]
            for shard in t.shards:
                rs, cs = shard.full
                shard.tensor.masked_fill_(changed[rs, cs], 0)  # pruned -> 0, regrown weights start at 0 too
            for st in t.optimizer_states():
                shard = t.shards[st.shard]
                rs, cs = shard.full
                if st.kind == "element":
                    st.tensor.masked_fill_(changed[rs, cs], 0)
                else:  # the row's state is shared by this shard's columns: reset when none survived
                    reset = ~_any_per_row(kept[rs, cs]) & _any_per_row(either[rs, cs])
                    st.tensor.masked_fill_(reset, 0)
            old[name].copy_(new[name])


def _any_per_row(mask: Tensor) -> Tensor:
    """`mask.any(1)` through uint8 max, several times faster on CPU for bool tables."""
    return mask.contiguous().view(torch.uint8).amax(1).bool() if mask.shape[1] else mask.any(1)


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

"""Row-structured DSL (`dsl.mode: row`): whole rows are active or not, and the physical table holds
only the budget's rows.

Each DSL table has a virtual size (its vocabulary, `rows`) and a physical size (`rows_kept + 1`):
an int32 `remap` sends every virtual id to its physical row, or to the last physical row, the
*sentinel*, for an inactive id (kept at zero, or trained as one shared row: `sentinel`). The remap runs before the TBE lookup
(`PlanEmbeddings._transformed`, an `index_select`), so FBGEMM's fused kernels only ever see
physical rows and the trained table IS the budget (AdaEmbed, OSDI'23; TorchRec's ITEP modules,
`torchrec.modules.itep_modules`, do the same with FBGEMM's CUDA ops `init_address_lookup` /
`remap_indices_update_utils`; fbgemm-gpu-cpu lacks them, so the remap here is our own and runs on
either device).

Per step: the remap (in the model), and nothing else on most steps: with row-wise Adagrad (the
default) the sentinel row's optimizer state is set to +inf once, so the fused step moves it by
lr * g / sqrt(inf) = 0; with other optimizers it is zeroed after each step (a `learned` sentinel
is left to train). On `grad_steps` sampled steps of an interval (default 10),
a hook on the pooled output adds each looked-up virtual id's bag-gradient norm to a per-virtual-row
accumulator (a [rows] vector, not a table) and keeps the step's ids. Every ΔT steps, per table, the
`n` inactive rows with the most gradient evidence (ranked among the ids the sampled steps saw, not
the vocabulary) replace the `n` active rows of smallest weight norm (`n` from the global cosine
schedule times the table's row budget; only rows with evidence are grown). A grown row starts at
zero (`grow_init`; with the default zero sentinel that is what its ids read while inactive, so the
exchange leaves their outputs unchanged, as RigL / DSL grow weights at 0) with zeroed optimizer
state, in the pruned row's physical slot.

The budget is global like `exact` (one schedule, one count of rows), but each table's physical
capacity is fixed at its share (the plan's density x rows), so rows move within a table. Under DMP
(sharded physical tables, Ray workers) the evidence and the row norms are summed across ranks
before the (deterministic) choice, so every rank makes the same exchange.

Example (a bare FBGEMM-like table: 8 virtual ids, 3 physical rows + the sentinel):
    >>> import torch
    >>> remap = initial_remap(8, 3)
    >>> remap.tolist()
    [0, 1, 2, 3, 3, 3, 3, 3]
    >>> row_budget(0.4, 8)
    3
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from embeddings.config import DSLConfig
from embeddings.dsl.hooks import resolved
from embeddings.dsl.masks import select
from embeddings.dsl.remask import is_distributed
from embeddings.dsl.steps import StepClock
from embeddings.dsl.tables import DSLError, DSLTable, find_tables, live_bytes

__all__ = ["RowDSLController", "initial_remap", "row_budget", "apply_remap"]


def row_budget(density: float, rows: int) -> int:
    """Active rows of a `rows`-row table at `density` (rounded, at least 1, at most `rows`).

    Example:
        >>> row_budget(0.2, 1000), row_budget(0.001, 10)
        (200, 1)
    """
    return max(1, min(rows, int(round(density * rows))))


def initial_remap(rows: int, kept: int, active: Tensor | None = None) -> Tensor:
    """int32 virtual->physical map: `active` virtual rows (default the first `kept`) get physical
    rows 0..kept-1 in order, every other id the sentinel `kept`.

    Example:
        >>> initial_remap(5, 2, torch.tensor([4, 1])).tolist()
        [2, 1, 2, 2, 0]
    """
    remap = torch.full((rows,), kept, dtype=torch.int32)
    active = torch.arange(kept) if active is None else active.long()
    remap[active] = torch.arange(active.numel(), dtype=torch.int32)
    return remap


def apply_remap(remap: Tensor, ids: Tensor) -> Tensor:
    """Physical ids of virtual `ids` (same dtype as `ids`): one `index_select` on the int32 map.

    Example:
        >>> apply_remap(torch.tensor([3, 0, 3], dtype=torch.int32), torch.tensor([1, 0, 2])).tolist()
        [0, 3, 3]
    """
    return remap.index_select(0, ids).to(ids.dtype)


@dataclass
class _RowTable:
    """One row-mode table: the virtual->physical `remap` (the model's buffer, updated in place),
    `slots` (the virtual row held by each physical slot), the physical table's shards and state."""

    name: str
    rows: int          # virtual rows
    kept: int          # physical rows in use; the sentinel is physical row `kept`
    remap: Tensor
    slots: Tensor
    physical: DSLTable
    features: list
    init_bound: float


class RowDSLController(StepClock):
    """Row-structured DSL over the row-mode tables of a model (see the module docstring).

    Args:
        model: holds `PlanEmbeddings` built from a plan whose DSL tables have `params.rows_kept`
            (the planner sets it for `dsl.mode: row`), or anything `find_tables` reads when
            `remaps` is given (e.g. a bare FBGEMM TBE in a benchmark).
        cfg, total_steps, frequencies, seed: as `DSLController` (frequency init keeps the most
            frequent ids active).
        remaps: table name -> its int32 virtual->physical map (found in the model when None).

    Per step: `observe(kjt, pooled)` with the *virtual* batch and the pooled output, backward and
    optimizer step, `after_step(step)`.

    Example:
        >>> from embeddings.spec import EmbeddingPlan, TableSpec
        >>> from embeddings.tables import PlanEmbeddings
        >>> emb = PlanEmbeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, method="pruned",
        ...                                                 params={"rows_kept": 3}, dsl_density=0.3)]))
        >>> ctl = RowDSLController(emb, DSLConfig(enabled=True, mode="row", density=0.3, init="random"), total_steps=10)
        >>> ctl.budget_rows, ctl.active_rows(), tuple(emb.ebc.embedding_bags["t"].weight.shape)
        (3, 3, (4, 4))
    """

    default_grad_steps = 10  # row evidence is a norm per id: a few sampled steps per interval are enough
    # what inactive ids read: "zero" (the sentinel row is zeroed after every step) or "learned" (the
    # sentinel trains like any row: one shared row for every inactive id of the table, like an
    # out-of-vocabulary row; exported with the table). ml-100k at 80% sparsity, seeds 0-2: zero
    # 0.6724, learned 0.6745 (+-0.005 across seeds): kept at zero, the smaller export
    sentinel = "zero"
    # how a grown row starts: "zero" (as RigL / DSL grow weights at 0), "sentinel" (the sentinel
    # row's value: what its ids read while inactive, so the exchange leaves their outputs unchanged;
    # the same as zero with a zero sentinel) or "uniform" (a fresh init in +-1/sqrt(rows)); its
    # optimizer state starts at zero in every case. With a learned sentinel, seeds 0-2: zero 0.6745,
    # sentinel 0.6666; with a zero sentinel, seed 0: zero 0.6696, uniform 0.6676
    grow_init = "zero"

    def __init__(self, model: nn.Module, cfg: DSLConfig, total_steps: int,
                 frequencies: Mapping[str, Tensor] | None = None, *, remaps: Mapping[str, Tensor] | None = None,
                 optimizers: Iterable[torch.optim.Optimizer] = (), seed: int = 0) -> None:
        if total_steps <= 0:
            raise DSLError(f"DSL needs total_steps > 0, got {total_steps}")
        StepClock.__init__(self, cfg, total_steps, seed)
        remaps = dict(remaps) if remaps is not None else _model_remaps(model)
        if not remaps:
            raise DSLError("embeddings.dsl.mode is 'row' but the model has no row-mode table; plan with "
                           "dsl.mode: row (the planner gives DSL tables params.rows_kept)")
        found = find_tables(model, optimizers)
        self.tables: dict[str, _RowTable] = {}
        gen = torch.Generator().manual_seed(seed)
        for name, remap in remaps.items():
            if name not in found:
                raise DSLError(f"row DSL table {name!r} is not in the model (tables found: {sorted(found)})")
            phys = found[name]
            kept = phys.rows - 1
            if kept < 1 or remap.numel() < kept:
                raise DSLError(f"row DSL table {name!r}: physical rows {phys.rows} do not fit its {remap.numel()} "
                               "virtual rows plus the zero sentinel row")
            if cfg.init == "frequency" and not frequencies:
                raise DSLError("embeddings.dsl.init is 'frequency' but the row DSL controller got no id frequencies; "
                               "pass frequencies= or set embeddings.dsl.init: random")
            # tables without counts start from random rows, as `exact` does
            counts = _counts(frequencies, name, phys.features, remap.numel()) if cfg.init == "frequency" else None
            if counts is not None:  # the most frequent ids, ties to the lower id
                active = select(counts.float(), kept, largest=True)
            else:
                active = torch.randperm(remap.numel(), generator=gen)[:kept].sort().values
            remap.copy_(initial_remap(remap.numel(), kept, active).to(remap.device))
            slots = torch.empty(kept, dtype=torch.long)
            slots[remap[active].long().cpu()] = active
            self.tables[name] = _RowTable(name, int(remap.numel()), kept, remap, slots.to(remap.device), phys,
                                          list(phys.features), 1.0 / math.sqrt(phys.rows))
        self._feature_table = {f: t.name for t in self.tables.values() for f in t.features}
        self.grad_acc = {name: torch.zeros(t.rows, dtype=torch.float32, device=t.remap.device) for name, t in self.tables.items()}
        self.budget_rows = sum(t.kept for t in self.tables.values())
        self.budget = sum(t.kept * t.physical.dim for t in self.tables.values())  # weights, as `exact` counts them
        self.updates = self.exchanged_total = 0
        self._sentinels: list[Tensor] | None = None
        # the ids with evidence this interval (the only grow candidates; None: unknown, scan the evidence)
        self._evidence_ids: dict[str, list[Tensor]] | None = {name: [] for name in self.tables}
        self._zero_sentinels()
        self._frozen = self.sentinel == "zero" and self._freeze_sentinels()

    # -- per step ---------------------------------------------------------------------------

    def observe(self, kjt, pooled) -> None:
        """On sampled steps: register a hook adding each looked-up virtual id's bag-gradient norm to
        its row's evidence (`kjt` holds virtual ids; `pooled` is the KeyedTensor or [B, dims] tensor)."""
        if not self._accumulates():  # first: most steps end here, at a set lookup
            return
        pooled = resolved(pooled)
        values = pooled if isinstance(pooled, Tensor) else pooled.values()
        if not values.requires_grad:
            return
        spans = self._spans(kjt, pooled)
        if spans:
            values.register_hook(lambda grad, spans=spans: self._accumulate(grad, spans))

    def after_step(self, step: int) -> dict:
        """After the optimizer step: zero the sentinel rows (`sentinel == "zero"`); every ΔT steps exchange rows.

        Returns the same keys as `DSLController.after_step` (counts in weights), plus `rows_exchanged`;
        `active` and `density` are the invariant the exchange keeps (every physical slot holds one
        virtual row: `active_weights()` counts it, a pass over the remap, which the tests check)."""
        if self.sentinel == "zero" and not self._frozen:
            self._zero_sentinels()
        stats, fraction = self.tick(step, self.budget)
        if fraction is None:
            return stats
        moved = self._exchange(fraction) if fraction > 0 else {}
        for acc in self.grad_acc.values():
            acc.zero_()
        self._evidence_ids = {name: [] for name in self.tables}
        self.updates += 1
        rows_moved = sum(moved.values())
        weights_moved = sum(n * self.tables[k].physical.dim for k, n in moved.items())
        self.exchanged_total += weights_moved
        stats.update(updated=True, fraction=fraction, exchanged=weights_moved, rows_exchanged=rows_moved,
                     scheduled=int(round(fraction * self.budget)), active=self.budget,
                     density={name: t.kept / t.rows for name, t in self.tables.items()},
                     embedding_bytes=self.live_bytes())
        return stats

    def live_bytes(self) -> int:
        """Bytes of this rank's live training tensors: the compact tables, their optimizer state, the
        remaps and the per-row evidence (the saving in training memory, measured)."""
        return live_bytes([t.physical for t in self.tables.values()], {k: t.remap for k, t in self.tables.items()},
                          self.grad_acc)

    # -- figures ------------------------------------------------------------------------------

    def active_rows(self) -> int:
        return sum(int((t.remap < t.kept).sum()) for t in self.tables.values())

    def active_weights(self) -> int:
        """Weights of the active rows (== `budget`: every physical slot holds one virtual row)."""
        return sum(int((t.remap < t.kept).sum()) * t.physical.dim for t in self.tables.values())

    def density_by_table(self) -> dict[str, float]:
        return {name: float((t.remap < t.kept).sum()) / t.rows for name, t in self.tables.items()}

    def state_dict(self) -> dict:
        return {"mode": "row", "remaps": {k: t.remap.clone() for k, t in self.tables.items()},
                "grad_acc": {k: v.clone() for k, v in self.grad_acc.items()}, "updates": self.updates,
                "exchanged_total": self.exchanged_total, "since_update": self._since_update, "steps_done": self._steps_done}

    def load_state_dict(self, d: Mapping) -> None:
        if d.get("mode") != "row" or set(d["remaps"]) != set(self.tables):
            raise DSLError("DSL checkpoint was written by another dsl.mode or plan; train into a new output folder")
        for name, t in self.tables.items():
            t.remap.copy_(d["remaps"][name])
            active = (t.remap < t.kept).nonzero().squeeze(1)
            t.slots[t.remap[active].long()] = active
            self.grad_acc[name].copy_(d["grad_acc"][name])
        self._evidence_ids = None  # the evidence of the interval so far came from before the checkpoint
        self.updates, self.exchanged_total = int(d["updates"]), int(d["exchanged_total"])
        self._since_update, self._steps_done = int(d["since_update"]), int(d["steps_done"])
        self._zero_sentinels()
        self._frozen = self.sentinel == "zero" and self._freeze_sentinels()

    # -- internals ----------------------------------------------------------------------------

    def _spans(self, kjt, pooled) -> list[tuple[str, int, int, Tensor, Tensor, Tensor | None]]:
        """(table, first column, dim, ids, bag lengths, id weights) of each row-mode feature."""
        if isinstance(pooled, Tensor):
            keys = list(range(len(kjt.keys())))
            dims = [self.tables[self._feature_table[k]].physical.dim if k in self._feature_table else 0 for k in keys]
            positions = {k: k for k in keys}
        else:
            keys, dims = pooled.keys(), pooled.length_per_key()
            positions = {k: i for i, k in enumerate(kjt.keys())}
        lengths, offsets, weights, stride = kjt.lengths(), kjt.offset_per_key(), kjt.weights_or_none(), kjt.stride()
        out, col = [], 0
        for key, dim in zip(keys, dims):
            table = self._feature_table.get(key)
            if table is not None and key in positions:
                p = positions[key]
                lo, hi = offsets[p], offsets[p + 1]
                out.append((table, col, dim, kjt.values()[lo:hi], lengths[p * stride:(p + 1) * stride],
                            weights[lo:hi] if weights is not None else None))
            col += dim
        return out

    @torch.no_grad()
    def _accumulate(self, grad: Tensor, spans) -> None:
        for table, col, dim, ids, lens, w in spans:
            if ids.numel() == 0:
                continue
            norms = grad[:, col:col + dim].float().norm(dim=1)
            if self.tables[table].physical.pooling == "mean":
                norms = norms / lens.clamp(min=1).to(norms.dtype)
            per_id = norms if ids.numel() == lens.numel() else torch.repeat_interleave(norms, lens)
            if w is not None:
                per_id = per_id * w.float().abs()
            ids = ids.long()
            self.grad_acc[table].index_add_(0, ids, per_id)
            if self._evidence_ids is not None:
                self._evidence_ids[table].append(ids)

    @torch.no_grad()
    def _zero_sentinels(self) -> None:
        """Zero each sentinel row (the weights only: its optimizer state never reaches a real row,
        since the sentinel's slot never holds one)."""
        if self._sentinels is None:  # views of the sentinel rows, found once (shards do not move)
            self._sentinels = [shard.tensor[int(local)] for t in self.tables.values()
                               for shard, local in _rows_in_shards(t.physical, torch.tensor([t.kept]))]
        for row in self._sentinels:
            row.zero_()

    @torch.no_grad()
    def _freeze_sentinels(self) -> bool:
        """Put +inf in the row-wise optimizer state of every sentinel row: row-wise Adagrad (FBGEMM's
        default) then steps it by lr * g / sqrt(inf) = 0, so it stays at zero with no op per step.
        Returns whether every table has such a state (else the sentinels are zeroed after each step;
        element-wise states are left alone: an infinite first moment would step by inf / inf)."""
        frozen = True
        for t in self.tables.values():
            states = t.physical.optimizer_states()
            if not states or any(st.kind != "row" for st in states):
                frozen = False
                continue
            for st in states:
                shard = t.physical.shards[st.shard]
                if shard.row_offset <= t.kept < shard.row_offset + shard.tensor.shape[0]:
                    st.tensor[t.kept - shard.row_offset] = math.inf
        return frozen

    @torch.no_grad()
    def _sentinel_row(self, t: _RowTable) -> Tensor:
        """The sentinel row's weights as one fp32 CPU row (shards joined; across ranks summed)."""
        row = torch.zeros(t.physical.dim, dtype=torch.float32)
        for shard, local in _rows_in_shards(t.physical, torch.tensor([t.kept])):
            c0, c = shard.col_offset, shard.tensor.shape[1]
            row[c0:c0 + c] = shard.tensor[int(local[0])].detach().float().cpu()
        if is_distributed() and not t.physical.replicated:
            row = row.to(t.remap.device)
            dist.all_reduce(row, op=dist.ReduceOp.SUM)
        return row.cpu()

    @torch.no_grad()
    def _row_norms(self, t: _RowTable) -> Tensor:
        """Squared L2 norm of each physical row in use (shards summed; across ranks when sharded)."""
        sq = torch.zeros(t.physical.rows, dtype=torch.float32, device=t.remap.device)
        for shard in t.physical.shards:
            r = shard.tensor.shape[0]
            sq[shard.row_offset:shard.row_offset + r] += torch.linalg.vector_norm(shard.tensor.detach(), dim=1, dtype=torch.float32).square_().to(sq.device)
        if is_distributed() and not t.physical.replicated:
            dist.all_reduce(sq, op=dist.ReduceOp.SUM)
        return sq[:t.kept]

    def _grow_candidates(self, name: str, t: _RowTable) -> tuple[Tensor, Tensor]:
        """Sorted inactive virtual rows with evidence, and their evidence: from the ids the sampled
        steps saw (a few thousand, not the vocabulary), or a scan of the evidence when those are not
        known (across ranks, after a checkpoint)."""
        acc = self.grad_acc[name]
        parts = self._evidence_ids[name] if self._evidence_ids is not None and not is_distributed() else None
        if parts is None:
            evidence = acc.clone()
            evidence[t.slots] = 0  # active rows are not candidates for growth
            rows = evidence.nonzero().squeeze(1)
        elif not parts:
            rows = acc.new_zeros(0, dtype=torch.long)
        else:
            rows = torch.unique(torch.cat(parts) if len(parts) > 1 else parts[0])
            rows = rows.masked_select(t.remap.index_select(0, rows).eq(t.kept) & acc.index_select(0, rows).gt(0))
        return rows, acc.index_select(0, rows)

    @torch.no_grad()
    def _exchange(self, fraction: float) -> dict[str, int]:
        """One update: per table the `round(fraction x kept)` best-evidence inactive rows replace the
        active rows of smallest weight norm. Returns rows moved per table."""
        if is_distributed():
            for acc in self.grad_acc.values():
                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        moved = {}
        gen = torch.Generator().manual_seed(self._seed * 1_000_003 + 7919 * (self.updates + 1))
        for name, t in self.tables.items():
            n = min(int(round(fraction * t.kept)), t.kept, t.rows - t.kept)
            if n <= 0:
                continue
            candidates, evidence = self._grow_candidates(name, t)
            if candidates.numel() == 0:
                continue
            # only rows with evidence are grown (and as many pruned): rank those alone (ties to the lower id)
            grow = candidates.index_select(0, select(evidence, n, largest=True)) if candidates.numel() > n else candidates
            slots = select(self._row_norms(t), grow.numel(), largest=False)  # physical slots to free
            t.remap[t.slots[slots]] = t.kept
            t.remap[grow] = slots.to(torch.int32)
            t.slots[slots] = grow
            if self.grow_init == "uniform":
                fresh = torch.empty(slots.numel(), t.physical.dim).uniform_(-t.init_bound, t.init_bound, generator=gen)
            elif self.grow_init == "sentinel":
                fresh = self._sentinel_row(t).expand(slots.numel(), -1)
            else:
                fresh = torch.zeros(slots.numel(), t.physical.dim)
            for shard, local, idx in _rows_in_shards(t.physical, slots, with_index=True):
                c0, c = shard.col_offset, shard.tensor.shape[1]
                shard.tensor[local] = fresh[idx, c0:c0 + c].to(shard.tensor.device, shard.tensor.dtype)
            _zero_state(t.physical, slots)
            moved[name] = int(grow.numel())
        if self.sentinel == "zero":
            self._zero_sentinels()
        return moved


def _rows_in_shards(table: DSLTable, rows: Tensor, with_index: bool = False):
    """(shard, local row numbers[, positions in `rows`]) of each shard holding some of `rows`."""
    for shard in table.shards:
        r = shard.tensor.shape[0]
        rows_d = rows.to(shard.tensor.device)
        inside = ((rows_d >= shard.row_offset) & (rows_d < shard.row_offset + r)).nonzero().squeeze(1)
        if inside.numel():
            local = rows_d[inside] - shard.row_offset
            yield (shard, local, inside.cpu()) if with_index else (shard, local)


def _zero_state(table: DSLTable, rows: Tensor) -> None:
    """Zero the optimizer state (row-wise or element-wise) of the given physical rows."""
    for st in table.optimizer_states():
        shard = table.shards[st.shard]
        r = shard.tensor.shape[0]
        rows_d = rows.to(st.tensor.device)
        inside = rows_d[(rows_d >= shard.row_offset) & (rows_d < shard.row_offset + r)] - shard.row_offset
        if inside.numel():
            st.tensor[inside] = 0


def _counts(frequencies: Mapping[str, Tensor] | None, table: str, features: list, rows: int) -> Tensor | None:
    """Id counts of a table (by table name, or summed over its features), or None."""
    if not frequencies:
        return None
    out = None
    for key in [table, *features]:
        if key in frequencies:
            c = torch.as_tensor(frequencies[key]).double().cpu()
            if c.shape != (rows,):
                raise DSLError(f"frequencies[{key!r}] has {tuple(c.shape)} counts; table {table!r} has {rows} rows: "
                               "give one count per row")
            out = c if out is None else out + c
            if key == table:
                break
    return out


def _model_remaps(model: nn.Module) -> dict[str, Tensor]:
    """The row-mode remaps of every `PlanEmbeddings` under `model` (table name -> int32 buffer)."""
    out: dict[str, Tensor] = {}
    for m in model.modules():
        remaps = getattr(m, "row_remaps", None)
        if isinstance(remaps, nn.Module):
            out.update(dict(remaps.named_buffers()))
    return out

"""An `EmbeddingPlan` as TorchRec modules: `PlanEmbeddings` (pooled, for CTR models) and
`PlanEmbeddingCollection` (unpooled, for sequence models).

Every physical table of every method lives in ONE TorchRec collection attribute (`.ebc` /
`.ec`), so `DistributedModelParallel` (see `sharding.py`) can shard it and FBGEMM's
table-batched kernels run the lookups with a fused optimizer. Per-feature id transforms
(hashing, quotient/remainder) run before the collection; combiners (QR product, mixed-dim
projection, QAT fake-quant) after it.

Inside the collection, feature `f` of a table looks up physical table `<table>__<suffix>` under
the key `f__<suffix>` (`physical_key`).

Example:
    >>> import torch
    >>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    >>> from embeddings.spec import EmbeddingPlan, TableSpec
    >>> plan = EmbeddingPlan(tables=[TableSpec("t_a", ["a"], rows=10, dim=4),
    ...     TableSpec("t_b", ["b"], rows=1000, dim=4, method="qr", params={"m": 40})])
    >>> emb = build_embeddings(plan)
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([1, 2, 3, 999]),
    ...                                           lengths=torch.tensor([1, 1, 1, 1]))
    >>> kt = emb(kjt)
    >>> kt.keys(), tuple(kt.values().shape)
    (['a', 'b'], (2, 8))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from embeddings.compression import CompressionMethod, PhysicalTable, get_method
from embeddings.dsl.rows import apply_remap, initial_remap
from embeddings.errors import EmbeddingInputError, MethodParamsError
from embeddings.spec import EmbeddingPlan, TableSpec

SEP = "__"
_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def physical_key(name: str, suffix: str) -> str:
    """Name of a physical table (from a table name) or lookup key (from a feature name).

    Example:
        >>> physical_key("t_C3", "q"), physical_key("C1", "")
        ('t_C3__q', 'C1')
    """
    return f"{name}{SEP}{suffix}" if suffix else name


def _uniform_init(lo: float, hi: float):
    def init(weight: torch.Tensor) -> torch.Tensor:
        return nn.init.uniform_(weight, lo, hi)
    return init


@dataclass
class _Entry:
    spec: TableSpec
    method: CompressionMethod
    physical: list[PhysicalTable]


def _entries(plan: EmbeddingPlan) -> list[_Entry]:
    out, seen = [], set()
    for spec in plan.tables:
        method = get_method(spec.method)
        method.check(spec)
        if spec.method == "drop":
            continue
        for f in spec.features:
            if f in seen:
                raise MethodParamsError(f"embedding plan: feature '{f}' is in two tables; give each feature one table")
            seen.add(f)
        out.append(_Entry(spec, method, method.physical_tables(spec)))
    return out


def table_report(plan: EmbeddingPlan) -> list[dict]:
    """One row per table: name, features, method, rows, dim, fp32-equivalent and actual bytes.

    Example:
        >>> from embeddings.spec import TableSpec
        >>> table_report(EmbeddingPlan([TableSpec("t", ["a"], rows=10, dim=4, method="int8")]))[0]["bytes"]
        80
    """
    rows = []
    for spec in plan.tables:
        method = get_method(spec.method)
        method.check(spec)
        rows.append({"table": spec.name, "features": list(spec.features), "method": spec.method,
                     "params": dict(spec.params), "rows": spec.rows, "dim": spec.dim,
                     "fp32_bytes": 0 if spec.method == "drop" else spec.fp32_bytes,
                     "bytes": method.spec_bytes(spec)})
    return rows


class _PlanModule(nn.Module):
    """Shared parts of the pooled and unpooled builders: id transforms and combiners."""

    def __init__(self, plan: EmbeddingPlan, serving: bool = False) -> None:
        super().__init__()
        self.plan = plan
        self._entries = _entries(plan)
        self.features: list[str] = [f for e in self._entries for f in e.spec.features]
        self.dims: list[int] = [e.spec.dim for e in self._entries for _ in e.spec.features]
        self.combiners = nn.ModuleDict({e.spec.name: (e.method.serving_combiner(e.spec) if serving else e.method.combiner(e.spec))
                                        for e in self._entries})
        # lookup keys in collection order: table by table, physical table by physical table
        self._lookup_keys = [physical_key(f, p.suffix) for e in self._entries for p in e.physical for f in e.spec.features]
        # row-mode DSL tables (`params.rows_kept`): the int32 virtual->physical id map run before the
        # lookup (embeddings/dsl/rows.py updates it in place); a buffer, so checkpoints carry it
        self.row_remaps = nn.Module()
        if not serving:
            for e in self._entries:
                if e.spec.params.get("rows_kept") is not None:
                    self.row_remaps.register_buffer(e.spec.name, initial_remap(e.spec.rows, int(e.spec.params["rows_kept"])))

    def _tables(self) -> list[tuple[str, int, int, list[str], tuple[float, float] | None, str]]:
        return [(physical_key(e.spec.name, p.suffix), p.rows, p.dim,
                 [physical_key(f, p.suffix) for f in e.spec.features], p.init_range, e.spec.pooling)
                for e in self._entries for p in e.physical]

    def _transformed(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The input batch re-keyed for the collection, with each method's id transform applied."""
        present = set(kjt.keys())
        missing = [f for f in self.features if f not in present]
        if missing:
            raise EmbeddingInputError(f"sparse batch: feature(s) {missing} of the embedding plan are missing "
                                      f"from the KeyedJaggedTensor keys {kjt.keys()}; add them to the batch")
        jts = kjt.to_dict()
        per_key: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for e in self._entries:
            for f in e.spec.features:
                jt = jts[f]
                ids = jt.values().long()
                if ids.numel():
                    lo, hi = int(ids.min()), int(ids.max())
                    if lo < 0 or (not e.method.any_ids and hi >= e.spec.rows):
                        bad = lo if lo < 0 else hi
                        raise EmbeddingInputError(
                            f"sparse batch: feature '{f}': id {bad} outside 0..{e.spec.rows - 1} of table "
                            f"'{e.spec.name}'; encode ids with the vocab stage or raise the table's rows in the plan")
                pids = e.method.transform_ids(e.spec, ids)
                remap = getattr(self.row_remaps, e.spec.name, None)
                if remap is not None:
                    pids = [apply_remap(remap, pids[0])]
                for p, pid in zip(e.physical, pids):
                    per_key[physical_key(f, p.suffix)] = (pid, jt.lengths())
        keys = self._lookup_keys
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=torch.cat([per_key[k][0] for k in keys]) if keys else torch.empty(0, dtype=torch.long),
            lengths=torch.cat([per_key[k][1] for k in keys]) if keys else torch.empty(0, dtype=torch.int32))

    def _combine(self, looked_up: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.combiners[e.spec.name]([looked_up[physical_key(f, p.suffix)] for p in e.physical])
                for e in self._entries for f in e.spec.features]

    def table_report(self) -> list[dict]:
        """Bytes of every table of the plan (see `table_report`)."""
        return table_report(self.plan)


class PlanEmbeddings(_PlanModule):
    """Built from an EmbeddingPlan. forward(kjt: KeyedJaggedTensor) -> KeyedTensor whose keys are the
    plan's features (in plan order, dropped features left out), each `dim` wide. All physical tables
    live in ONE TorchRec EmbeddingBagCollection attribute `.ebc` (so DistributedModelParallel can
    shard it and FBGEMM TBE kernels run the lookups); per-feature id transforms (hashing,
    quotient/remainder) happen before the EBC and combinations/projections (QR product, mixed-dim
    projection, QAT fake-quant) after. Extra keys in the input batch are ignored.

    Example:
        >>> from embeddings.spec import TableSpec
        >>> emb = PlanEmbeddings(EmbeddingPlan([TableSpec("t", ["a"], rows=10, dim=4)]))
        >>> [c.name for c in emb.ebc.embedding_bag_configs()]
        ['t']
    """

    def __init__(self, plan: EmbeddingPlan, device: torch.device | None = None) -> None:
        super().__init__(plan)
        configs = []
        for name, rows, dim, keys, init, pooling in self._tables():
            kw = {"init_fn": _uniform_init(*init)} if init else {}
            configs.append(EmbeddingBagConfig(name=name, num_embeddings=rows, embedding_dim=dim,
                                              feature_names=keys, pooling=_POOLING[pooling], **kw))
        self.ebc = EmbeddingBagCollection(tables=configs, device=device)
        if device is not None:
            self.combiners.to(device)
            self.row_remaps.to(device)

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.ebc(self._transformed(kjt)).to_dict()
        outs = self._combine(pooled)
        return KeyedTensor(keys=list(self.features), length_per_key=list(self.dims), values=torch.cat(outs, dim=1))


class PlanEmbeddingCollection(_PlanModule):
    """Unpooled lookups for sequence models: forward(kjt) -> {feature: JaggedTensor of [ids, dim]}.

    All physical tables live in ONE TorchRec EmbeddingCollection `.ec` (TorchRec requires one
    physical dim there, so methods that store another dim, like mixed_dim, are refused). Combiners
    act per id, so QR and QAT are exact here.

    Example:
        >>> from embeddings.spec import TableSpec
        >>> ec = PlanEmbeddingCollection(EmbeddingPlan([TableSpec("t", ["item"], rows=10, dim=4)]))
        >>> import torch
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["item"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        >>> tuple(ec(kjt)["item"].values().shape)
        (3, 4)
    """

    def __init__(self, plan: EmbeddingPlan, device: torch.device | None = None) -> None:
        super().__init__(plan)
        tables = self._tables()
        dims = {dim for _, _, dim, _, _, _ in tables}
        if len(dims) > 1:
            raise MethodParamsError(f"embedding plan: an unpooled collection needs one physical dim, got {sorted(dims)}; "
                                    "use methods that keep the table's dim (dense, hashing, qr, fp16, int8, int4)")
        configs = []
        for name, rows, dim, keys, init, _ in tables:
            kw = {"init_fn": _uniform_init(*init)} if init else {}
            configs.append(EmbeddingConfig(name=name, num_embeddings=rows, embedding_dim=dim, feature_names=keys, **kw))
        self.ec = EmbeddingCollection(tables=configs, device=device)
        if device is not None:
            self.combiners.to(device)
            self.row_remaps.to(device)

    def forward(self, kjt: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        looked_up = self.ec(self._transformed(kjt))
        values = self._combine({k: jt.values() for k, jt in looked_up.items()})
        jts = kjt.to_dict()
        return {f: JaggedTensor(values=v, lengths=jts[f].lengths()) for f, v in zip(self.features, values)}


def build_embeddings(plan: EmbeddingPlan, device: torch.device | None = None) -> PlanEmbeddings:
    """The pooled embedding module of `plan` (see `PlanEmbeddings`); CPU unless `device` says otherwise.

    Example:
        >>> from embeddings.spec import TableSpec
        >>> build_embeddings(EmbeddingPlan([TableSpec("t", ["a"], rows=10, dim=4)])).features
        ['a']
    """
    return PlanEmbeddings(plan, device=device)


def build_embedding_collection(plan: EmbeddingPlan, device: torch.device | None = None) -> PlanEmbeddingCollection:
    """The unpooled embedding module of `plan` for sequence models (see `PlanEmbeddingCollection`)."""
    return PlanEmbeddingCollection(plan, device=device)

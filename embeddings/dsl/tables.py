"""Where DSL finds embedding weights: writable views of every table's local pieces and its optimizer state.

Three sources, one shape (`DSLTable`):
- a TorchRec `EmbeddingBagCollection` (one `nn.EmbeddingBag` per table; optimizer state from
  `apply_optimizer_in_backward` or from optimizers handed in);
- a model wrapped by `DistributedModelParallel`: each `ShardedEmbeddingBagCollection` exposes its
  local shards (table-wise, column-wise, row-wise: `ShardedTensor` local shards with their offsets;
  data-parallel: the replicated tensor) and its fused FBGEMM optimizer state (`fused_optimizer`);
- a bare FBGEMM `SplitTableBatchedEmbeddingBagsCodegen` (`split_embedding_weights()` /
  `split_optimizer_states()` are views into its buffers).

Example:
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"])])
    >>> t = find_tables(ebc)["t"]
    >>> (t.rows, t.dim, t.features, t.shards[0].row_offset)
    (10, 4, ['f'], 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from embeddings.errors import EmbeddingError


class DSLError(EmbeddingError):
    """A DSL setting or input the user can fix (unknown init, missing frequencies, wrong table names)."""


@dataclass
class WeightShard:
    """One local piece of a table: `tensor` is a writable view covering rows
    `[row_offset, row_offset + tensor.shape[0])` and columns `[col_offset, col_offset + tensor.shape[1])`."""

    tensor: Tensor
    row_offset: int = 0
    col_offset: int = 0

    @property
    def full(self) -> tuple[slice, slice]:
        """Slices of the whole table this shard covers."""
        r, c = self.tensor.shape
        return slice(self.row_offset, self.row_offset + r), slice(self.col_offset, self.col_offset + c)


@dataclass
class StateShard:
    """Optimizer state of one weight shard: `kind` "row" (one value per row, e.g. row-wise Adagrad) or
    "element" (shaped like the shard, e.g. Adam moments)."""

    tensor: Tensor
    kind: str
    shard: int  # index into DSLTable.shards


@dataclass
class DSLTable:
    """One embedding table as DSL sees it."""

    name: str
    rows: int
    dim: int
    features: list[str | int]  # KeyedTensor keys (names), or positions for a bare FBGEMM TBE
    pooling: str  # "sum" | "mean"
    shards: list[WeightShard]
    replicated: bool = False  # data-parallel: every rank holds the whole table
    optimizer_states: Callable[[], list[StateShard]] = field(default=lambda: [])
    dense_param: nn.Parameter | None = None  # set when a non-fused optimizer trains the table from its .grad


def live_bytes(tables, *extra) -> int:
    """Bytes of the live training tensors of `tables` on this rank (weight shards and optimizer state)
    plus any `extra` tensors or dicts of tensors (masks, accumulators, remaps).

    Example:
        >>> t = DSLTable("t", 4, 2, ["f"], "sum", [WeightShard(torch.zeros(4, 2))])
        >>> live_bytes([t], {"t": torch.zeros(4, dtype=torch.bool)})
        36
    """
    def size(x) -> int:
        if isinstance(x, dict):
            return sum(size(v) for v in x.values())
        return x.numel() * x.element_size()

    total = sum(size(s.tensor) for t in tables for s in t.shards)
    total += sum(size(st.tensor) for t in tables for st in t.optimizer_states())
    return total + sum(size(x) for x in extra)


def _pooling_name(p: object) -> str:
    name = getattr(p, "name", str(p)).lower()
    if name not in ("sum", "mean"):
        raise DSLError(f"DSL supports sum or mean pooling, table uses {name!r}")
    return name


def _state_kind(state: Tensor, shard: Tensor) -> str | None:
    if state.dim() == 0:
        return None
    if state.numel() == shard.shape[0]:
        return "row"
    if state.numel() == shard.numel():
        return "element"
    return None


def _torch_optimizer_states(param: Tensor, optimizers: Iterable[torch.optim.Optimizer]) -> list[StateShard]:
    out = []
    opts = list(optimizers) + list(getattr(param, "_in_backward_optimizers", []))
    for opt in opts:
        for value in opt.state.get(param, {}).values():
            if isinstance(value, Tensor) and (kind := _state_kind(value, param)) is not None:
                out.append(StateShard(value.view(param.shape[0]) if kind == "row" else value.view_as(param), kind, 0))
    return out


def _from_ebc(ebc: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict[str, DSLTable]:
    tables = {}
    for cfg in ebc.embedding_bag_configs():
        weight = ebc.embedding_bags[cfg.name].weight
        tables[cfg.name] = DSLTable(
            name=cfg.name, rows=cfg.num_embeddings, dim=cfg.embedding_dim, features=list(cfg.feature_names),
            pooling=_pooling_name(cfg.pooling), shards=[WeightShard(weight.data)], replicated=True,
            optimizer_states=lambda w=weight: _torch_optimizer_states(w, optimizers), dense_param=weight)
    return tables


def _sharded_states(sebc: nn.Module, name: str, shards: list[WeightShard]) -> list[StateShard]:
    key = f"embedding_bags.{name}.weight"
    state = sebc.fused_optimizer.state_dict()["state"].get(key, {})
    out = []
    for value in state.values():
        pieces = [s.tensor for s in value.local_shards()] if hasattr(value, "local_shards") else [value]
        if not isinstance(pieces[0], Tensor) or len(pieces) != len(shards):
            continue
        for i, (piece, shard) in enumerate(zip(pieces, shards)):
            kind = _state_kind(piece, shard.tensor)
            if kind is not None:
                out.append(StateShard(piece.view(shard.tensor.shape[0]) if kind == "row" else piece.view_as(shard.tensor), kind, i))
    return out


def _from_sharded_ebc(sebc: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict[str, DSLTable]:
    state = sebc.state_dict()
    params = dict(sebc.named_parameters())
    tables = {}
    for cfg in sebc._embedding_bag_configs:
        value = state[f"embedding_bags.{cfg.name}.weight"]
        if hasattr(value, "local_shards"):
            shards = [WeightShard(s.tensor, s.metadata.shard_offsets[0], s.metadata.shard_offsets[1])
                      for s in value.local_shards()]
            replicated = False
            states = lambda s=sebc, n=cfg.name, sh=shards: _sharded_states(s, n, sh)  # noqa: E731
        else:  # data-parallel: a plain replicated parameter, trained by the dense optimizer
            param = params.get(f"embedding_bags.{cfg.name}.weight", value)
            shards, replicated = [WeightShard(param.data)], True
            states = lambda p=param: _torch_optimizer_states(p, optimizers)  # noqa: E731
        tables[cfg.name] = DSLTable(
            name=cfg.name, rows=cfg.num_embeddings, dim=cfg.embedding_dim, features=list(cfg.feature_names),
            pooling=_pooling_name(cfg.pooling), shards=shards, replicated=replicated, optimizer_states=states,
            dense_param=params.get(f"embedding_bags.{cfg.name}.weight") if replicated else None)
    return tables


def _from_tbe(tbe: nn.Module) -> dict[str, DSLTable]:
    weights = tbe.split_embedding_weights()
    names = tbe.table_names or [f"t{i}" for i in range(len(weights))]
    features: dict[int, list[str | int]] = {i: [] for i in range(len(weights))}
    for pos, t in enumerate(tbe.feature_table_map):
        features[t].append(pos)

    def states(i: int, w: Tensor) -> list[StateShard]:
        out = []
        per_table = tbe.split_optimizer_states()  # empty for stateless optimizers (SGD)
        for s in per_table[i] if i < len(per_table) else []:
            if (kind := _state_kind(s, w)) is not None:
                out.append(StateShard(s.view(w.shape[0]) if kind == "row" else s.view_as(w), kind, 0))
        return out

    return {names[i]: DSLTable(name=names[i], rows=w.shape[0], dim=w.shape[1], features=features[i],
                               pooling=_pooling_name(tbe.pooling_mode), shards=[WeightShard(w)], replicated=True,
                               optimizer_states=lambda i=i, w=w: states(i, w))
            for i, w in enumerate(weights)}


def find_tables(module: nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()) -> dict[str, DSLTable]:
    """Every embedding-bag table under `module` (a model, a DMP model, an EBC or an FBGEMM TBE).

    Example:
        >>> import torch
        >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        >>> m = torch.nn.Sequential(EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="a", embedding_dim=2, num_embeddings=3, feature_names=["x", "y"])]))
        >>> find_tables(m)["a"].features
        ['x', 'y']
    """
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen
    from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    optimizers = list(optimizers)
    found: dict[str, DSLTable] = {}

    def visit(sub: nn.Module, path: str) -> None:
        if isinstance(sub, ShardedEmbeddingBagCollection):
            part = _from_sharded_ebc(sub, optimizers)
        elif isinstance(sub, EmbeddingBagCollection):
            part = _from_ebc(sub, optimizers)
        elif isinstance(sub, SplitTableBatchedEmbeddingBagsCodegen):
            part = _from_tbe(sub)
        else:  # not a table holder: look inside (a table holder's own children are its kernels)
            for name, child in sub.named_children():
                visit(child, f"{path}.{name}" if path else name)
            return
        for name, table in part.items():
            if name in found:
                raise DSLError(f"two embedding tables are named {name!r} (second under {path or 'the root'}); "
                                 "DSL needs unique table names")
            found[name] = table

    visit(module, "")
    return found

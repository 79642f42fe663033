"""Export trained `PlanEmbeddings` to the form FBGEMM serves, and load it back as a module.

The artifact is one `torch.save` file of tensors, strings and numbers only (loads with
`weights_only=True`): the plan (JSON), every physical table as FBGEMM IntNBit TBE rows
(fp32 / fp16 / int8 / int4 with per-row fp16 scale and bias, optional index remapping for
pruned tables), and the serving combiners' weights (QR has none; mixed-dim its projection).
`load_exported` rebuilds an `ExportedEmbeddings` whose forward(kjt) -> KeyedTensor matches the
trained module's, all lookups in ONE `IntNBitTableBatchedEmbeddingBagsCodegen` per pooling mode.

Example::

    report = export_embeddings(trained_emb, "model/embeddings.pt")
    report["bytes_before"], report["bytes_after"]
    # -> (2560000, 660000)
    served = load_exported("model/embeddings.pt")
    served(kjt).values()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from embeddings.compression import ExportedTable
from embeddings.errors import ExportError
from embeddings.spec import EmbeddingPlan
from embeddings.tables import PlanEmbeddings, _PlanModule, physical_key

FORMAT = "sparserec-embeddings/1"
_NBITS = {"int8": 8, "int4": 4}


def find_plan_embeddings(model: nn.Module) -> PlanEmbeddings:
    """The `PlanEmbeddings` inside `model` (itself, a submodule, or inside a DMP wrapper)."""
    for m in model.modules():
        if isinstance(m, PlanEmbeddings):
            return m
    raise ExportError(f"export: {type(model).__name__} holds no PlanEmbeddings; build the model with build_embeddings(plan)")


def _full_tensor(t: Any, shape: tuple[int, int]) -> torch.Tensor:
    """A whole table from a plain, DTensor or ShardedTensor (gathered on every rank)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if isinstance(t, ShardedTensor):
        full = torch.zeros(shape, dtype=torch.float32)
        for shard in t.local_shards():
            r0, c0 = shard.metadata.shard_offsets
            r, c = shard.metadata.shard_sizes
            full[r0:r0 + r, c0:c0 + c] = shard.tensor.detach().float().cpu()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(full)  # shards do not overlap, so the sum is the whole table
        return full
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().float().cpu()


def trained_weights(emb: PlanEmbeddings) -> dict[str, torch.Tensor]:
    """Physical table name -> its full fp32 weight, from an unsharded or DMP-sharded `.ebc`."""
    shapes = {name: (rows, dim) for name, rows, dim, _, _, _ in emb._tables()}
    out = {}
    for key, value in emb.ebc.state_dict().items():
        name = key.split(".")[-2]
        if name in shapes:
            out[name] = _full_tensor(value, shapes[name])
    missing = set(shapes) - set(out)
    if missing:
        raise ExportError(f"export: no weights found for table(s) {sorted(missing)} in the embedding module")
    return out


def _encode(table: ExportedTable) -> dict[str, Any]:
    w = table.weight.float().contiguous()
    rows, dim = w.shape
    if table.serving in _NBITS:
        q = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, _NBITS[table.serving])
        weight, scale_bias = q[:, :-4].contiguous(), q[:, -4:].contiguous()
    elif table.serving == "fp16":
        weight, scale_bias = w.half().view(torch.uint8).contiguous(), None
    elif table.serving == "fp32":
        weight, scale_bias = w.view(torch.uint8).contiguous(), None
    else:
        raise ExportError(f"export: serving type '{table.serving}' is unknown; use fp32, fp16, int8 or int4")
    remap = None if table.index_remapping is None else table.index_remapping.to(torch.int32).contiguous()
    return {"weight": weight, "scale_bias": scale_bias, "serving": table.serving, "rows": rows, "dim": dim,
            "index_remapping": remap}


def _stored_bytes(entry: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for k in ("weight", "scale_bias", "index_remapping")
               if (t := entry[k]) is not None)


def export_embeddings(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Write the inference artifact of the PlanEmbeddings in `model` to `path`; return the report.

    Report: per table and in total, bytes before (fp32 physical tables + combiners as trained)
    and after (what the artifact stores), and the serving form of each physical table.
    In a multi-process group every rank must call it (tables are gathered); rank 0 writes.
    """
    emb = find_plan_embeddings(model)
    weights = trained_weights(emb)
    tables: dict[str, dict[str, Any]] = {}
    combiners: dict[str, dict[str, torch.Tensor]] = {}
    report_tables = []
    for e in emb._entries:
        names = [physical_key(e.spec.name, p.suffix) for p in e.physical]
        remap = getattr(emb.row_remaps, e.spec.name, None)
        if remap is not None:  # row-mode DSL: the compact table as it trained, and its remap
            exported = e.method.export_row_table(e.spec, weights[names[0]], remap)
        else:
            exported = e.method.export_tables(e.spec, [weights[n] for n in names])
        if len(exported) != len(names):
            raise ExportError(f"export: method '{e.spec.method}' returned {len(exported)} tables for '{e.spec.name}', expected {len(names)}")
        trained_comb = {k: v.detach().cpu() for k, v in emb.combiners[e.spec.name].state_dict().items()}
        serving_comb = e.method.serving_combiner(e.spec)
        serving_keys = set(serving_comb.state_dict())
        combiners[e.spec.name] = {k: v.clone() for k, v in trained_comb.items() if k in serving_keys}
        before = sum(weights[n].numel() * 4 for n in names) + sum(v.numel() * v.element_size() for v in trained_comb.values())
        after = sum(v.numel() * v.element_size() for v in combiners[e.spec.name].values())
        for n, t in zip(names, exported):
            tables[n] = _encode(t)
            after += _stored_bytes(tables[n])
        report_tables.append({"table": e.spec.name, "method": e.spec.method, "bytes_before": before, "bytes_after": after,
                              "dense_fp32_bytes": e.spec.fp32_bytes,
                              "serving": [tables[n]["serving"] for n in names]})
    artifact = {"format": FORMAT, "plan": emb.plan.to_json(), "tables": tables, "combiners": combiners}
    path = Path(path)
    if not dist.is_initialized() or dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(artifact, tmp)
        tmp.replace(path)
    before = sum(t["bytes_before"] for t in report_tables)
    after = sum(t["bytes_after"] for t in report_tables)
    dense = sum(t["dense_fp32_bytes"] for t in report_tables)
    return {"path": str(path), "tables": report_tables, "bytes_before": before, "bytes_after": after,
            "ratio": before / after if after else float("inf"), "dense_fp32_bytes": dense,
            "ratio_to_dense": after / dense if dense else 0.0}


class ExportedEmbeddings(_PlanModule):
    """The served form of a plan: same forward(kjt) -> KeyedTensor as `PlanEmbeddings`, lookups on
    FBGEMM's IntNBit TBE (one per pooling mode), serving combiners after it.

    Example::

        served = load_exported("model/embeddings.pt")
        served(kjt).keys() == trained(kjt).keys()
        # -> True
    """

    def __init__(self, plan: EmbeddingPlan, tables: dict[str, dict[str, Any]],
                 combiners: dict[str, dict[str, torch.Tensor]], device: torch.device | None = None) -> None:
        from fbgemm_gpu.split_embedding_configs import SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen

        super().__init__(plan, serving=True)
        device = device or torch.device("cpu")
        location = EmbeddingLocation.HOST if device.type == "cpu" else EmbeddingLocation.DEVICE
        sparse_type = {"fp32": SparseType.FP32, "fp16": SparseType.FP16, "int8": SparseType.INT8, "int4": SparseType.INT4}
        for name, comb in combiners.items():
            self.combiners[name].load_state_dict(comb)
        self.combiners.to(device)
        phys = self._tables()
        missing = [name for name, *_ in phys if name not in tables]
        if missing:
            raise ExportError(f"exported artifact: table(s) {missing} of its plan are missing; re-export the model")
        self._groups: list[tuple[list[str], int]] = []  # (lookup keys, dim sum) per TBE, in TBE order
        self.tbes = nn.ModuleList()
        self._key_order: list[str] = []
        for pooling in ("sum", "mean"):
            group = [t for t in phys if t[5] == pooling]
            if not group:
                continue
            specs, feature_table_map, keys, remaps, dims = [], [], [], [], []
            for ti, (name, _, dim, lookup_keys, _, _) in enumerate(group):
                entry = tables[name]
                specs.append((name, entry["rows"], dim, sparse_type[entry["serving"]], location))
                remaps.append(entry["index_remapping"])
                for k in lookup_keys:
                    feature_table_map.append(ti)
                    keys.append(k)
                    dims.append(dim)
            tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
                embedding_specs=specs, feature_table_map=feature_table_map,
                index_remapping=remaps if any(r is not None for r in remaps) else None,
                pooling_mode=PoolingMode.SUM if pooling == "sum" else PoolingMode.MEAN,
                device=device, output_dtype=SparseType.FP32)
            tbe.initialize_weights()
            tbe.assign_embedding_weights([(tables[name]["weight"].to(device),
                                           None if tables[name]["scale_bias"] is None else tables[name]["scale_bias"].to(device))
                                          for name, *_ in group])
            self.tbes.append(tbe)
            self._groups.append((keys, dims))

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        lookup = self._transformed(kjt).to_dict()
        looked_up: dict[str, torch.Tensor] = {}
        for tbe, (keys, dims) in zip(self.tbes, self._groups):
            values = torch.cat([lookup[k].values() for k in keys]).int()
            lengths = torch.cat([lookup[k].lengths() for k in keys])
            offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths.int())
            out = tbe(values, offsets)
            for k, part in zip(keys, torch.split(out, dims, dim=1)):
                looked_up[k] = part
        outs = self._combine(looked_up)
        return KeyedTensor(keys=list(self.features), length_per_key=list(self.dims), values=torch.cat(outs, dim=1))


def load_exported(path: str | Path, device: torch.device | None = None) -> ExportedEmbeddings:
    """Read an artifact written by `export_embeddings` (weights_only) into an `ExportedEmbeddings`."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: exported embeddings not found; check the path or run the export first")
    try:
        art = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # a truncated or foreign file
        raise ExportError(f"{path}: not a readable embeddings artifact ({type(err).__name__}); re-export the model") from None
    if not isinstance(art, dict) or art.get("format") != FORMAT:
        raise ExportError(f"{path}: not a {FORMAT} artifact; re-export the model with embeddings.export")
    plan = EmbeddingPlan.from_json(art["plan"])
    return ExportedEmbeddings(plan, art["tables"], art["combiners"], device=device)

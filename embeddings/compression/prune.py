"""`pruned`: the inference form of a DSL-trained table, served by FBGEMM's IntNBit TBE with index remapping.

After Dynamic Sparse Learning, a table's inactive weights are exactly zero and many rows (rare
ids) end with no active weight at all. The export drops those rows: a remap tensor sends each
original id to its compact row, or to -1 for a dropped row, which FBGEMM's inference TBE
(`index_remapping`, `pruned_array_lookup`) serves as a zero vector. The remaining rows are stored
in a compact precision (fp32 / fp16 / int8 / int4, FBGEMM's row-wise layout).

A row is dropped when all its weights are zero: that is exactly "fully pruned" for a masked
table, and for any row it leaves the served vector unchanged (zero either way), so no mask is
needed at export time.

Bytes: before = rows x dim x 4 (the fp32 table); after = kept rows x FBGEMM row bytes + 4 bytes
per original id (the int32 remap array).

Example:
    >>> import torch
    >>> w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]])
    >>> t = prune_rows("t", w, serving="fp32")
    >>> t.index_remapping.tolist(), t.weight.tolist(), (t.bytes_before, t.bytes_after)
    ([0, -1, 1], [[1.0, 0.0], [0.0, -2.0]], (24, 28))
    >>> tbe = serving_tbe([t])
    >>> tbe(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 1, 2, 3], dtype=torch.int32)).tolist()
    [[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from embeddings.compression.base import (SERVING_BITS, CompressionMethod, ExportedTable, PhysicalTable, register,
                                         row_bytes)
from embeddings.errors import ExportError, MethodParamsError
from embeddings.spec import TableSpec

REMAP_BYTES_PER_ID = 4  # int32 remap array


@dataclass
class PrunedTable:
    """A compact table: `weight` holds the kept rows (fp32, before storage rounding),
    `index_remapping[id]` is the compact row of `id` or -1 (served as zeros)."""

    name: str
    weight: Tensor
    index_remapping: Tensor
    serving: str = "fp16"

    @property
    def rows(self) -> int:
        return int(self.index_remapping.numel())

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kept_rows(self) -> int:
        return int(self.weight.shape[0])

    @property
    def bytes_before(self) -> int:
        """The fp32 table it replaces."""
        return self.rows * self.dim * 4

    @property
    def bytes_after(self) -> int:
        """Kept rows in the serving form plus the remap array."""
        return self.kept_rows * row_bytes(self.dim, self.serving) + self.rows * REMAP_BYTES_PER_ID

    def summary(self) -> dict[str, Any]:
        """Figures for reports: rows before/after, bytes before/after, ratio."""
        return {"table": self.name, "rows": self.rows, "kept_rows": self.kept_rows, "dim": self.dim,
                "serving": self.serving, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "ratio": round(self.bytes_before / max(1, self.bytes_after), 3)}


def _check_serving(serving: str, dim: int, where: str) -> None:
    if serving not in SERVING_BITS:
        raise MethodParamsError(f"{where}: serving '{serving}' is unknown; use one of {', '.join(SERVING_BITS)}")
    if serving == "int4" and dim % 4:
        raise MethodParamsError(f"{where}: int4 rows need dim divisible by 4 (FBGEMM alignment), got {dim}")


def prune_rows(name: str, weight: Tensor, mask: Tensor | None = None, serving: str = "fp16") -> PrunedTable:
    """Drop the rows with no non-zero weight (after applying `mask`, if given) and remap ids.

    Example:
        >>> w = torch.ones(4, 2)
        >>> m = torch.tensor([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=torch.bool)
        >>> prune_rows("t", w, m).index_remapping.tolist()
        [0, -1, -1, 1]
    """
    _check_serving(serving, int(weight.shape[1]), f"table '{name}'")
    w = weight.detach().float().cpu()
    if mask is not None:
        if mask.shape != w.shape:
            raise ExportError(f"table '{name}': mask is {tuple(mask.shape)} but weights are {tuple(w.shape)}; "
                              "export with the DSL controller of the same model")
        w = w * mask.cpu()
    if torch.isnan(w).any():
        raise ExportError(f"table '{name}': weights contain NaN; the training diverged, nothing to export")
    keep = (w != 0).any(dim=1)
    remap = torch.full((w.shape[0],), -1, dtype=torch.int32)
    kept = keep.nonzero().squeeze(1)
    remap[kept] = torch.arange(kept.numel(), dtype=torch.int32)
    return PrunedTable(name, w[kept].contiguous(), remap, serving)


def _dequantized(w: Tensor, serving: str) -> Tensor:
    """`w` after a round trip through the `serving` storage (what FBGEMM will serve)."""
    if serving == "fp32" or w.numel() == 0:
        return w
    if serving == "fp16":
        return w.half().float()
    import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

    q = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w.contiguous(), SERVING_BITS[serving])
    return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(q, SERVING_BITS[serving])


def compact_rows(name: str, weight: Tensor, mask: Tensor | None = None, max_error: float = 0.05,
                 servings: tuple[str, ...] = ("fp16", "int8", "int4")) -> PrunedTable:
    """The smallest exported form of a DSL table whose relative error ||W - served|| / ||W|| (Frobenius,
    over the masked table) stays within `max_error`: for each serving precision, its kept rows
    quantized, and the rows of least squared norm dropped (served as zeros through the remap) while
    the error budget lasts. Rows with no active weight are always dropped (no error); when no row
    is dropped the remap is left out (4 bytes per id saved). Ties go to the more precise form.

    Example:
        >>> w = torch.tensor([[1.0, -1.0, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0], [0.001, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, -1.0]])
        >>> t = compact_rows("t", w, max_error=0.01)
        >>> t.serving, t.index_remapping.tolist()
        ('fp16', [0, -1, -1, 1])
    """
    w = weight.detach().float().cpu()
    if mask is not None:
        w = w * mask.cpu()
    _check_finite(name, w)
    rows, dim = w.shape
    mass = w.pow(2).sum(1)
    total = float(mass.sum())
    budget = (max_error ** 2) * total
    order = torch.argsort(mass, stable=True)  # least mass first: the first rows to drop
    nonempty = int((mass > 0).sum())
    best: tuple[int, int, str, Tensor] | None = None  # (bytes, -precision rank, serving, keep)
    for rank, serving in enumerate(servings):
        if serving == "int4" and dim % 4:
            continue
        err = (w - _dequantized(w, serving)).pow(2).sum(1)  # per row, when kept
        # dropping row r changes its error from err[r] to mass[r]; drop in order of least mass
        base = float(err.sum())
        if base > budget and total > 0:
            continue  # this precision alone exceeds the error budget
        spent = base + torch.cumsum((mass - err)[order], 0)  # error after dropping the first i + 1 rows
        ok = (spent <= budget).nonzero()
        n_drop = max(rows - nonempty, int(ok[-1]) + 1 if ok.numel() else 0)  # empty rows cost nothing
        keep = torch.ones(rows, dtype=torch.bool)
        keep[order[:n_drop]] = False
        remap_bytes = rows * REMAP_BYTES_PER_ID if n_drop else 0
        size = int(keep.sum()) * row_bytes(dim, serving) + remap_bytes
        cand = (size, rank, serving, keep)
        if best is None or cand[:2] < best[:2]:
            best = cand
    if best is None:  # no precision within the budget (max_error ~ 0): lossless fp32 rows
        return prune_rows(name, w, serving="fp32")
    _, _, serving, keep = best
    remap = torch.full((rows,), -1, dtype=torch.int32)
    kept = keep.nonzero().squeeze(1)
    remap[kept] = torch.arange(kept.numel(), dtype=torch.int32)
    return PrunedTable(name, w[kept].contiguous(), remap, serving)


def _check_finite(name: str, weight: Tensor) -> None:
    if not torch.isfinite(weight).all():
        raise ExportError(f"table '{name}': weights contain NaN or inf; the training diverged, nothing to export")


def _sparse_type(serving: str):
    from fbgemm_gpu.split_embedding_configs import SparseType

    return {"fp32": SparseType.FP32, "fp16": SparseType.FP16, "int8": SparseType.INT8, "int4": SparseType.INT4}[serving]


def stored_rows(weight: Tensor, serving: str) -> tuple[Tensor, Tensor | None]:
    """Rows in FBGEMM's IntNBit layout: (data bytes, fp16 scale+bias bytes or None), quantized by FBGEMM's op.

    Example:
        >>> data, sb = stored_rows(torch.zeros(3, 8), "int8")
        >>> tuple(data.shape), tuple(sb.shape)
        ((3, 8), (3, 4))
    """
    w = weight.detach().float().contiguous()
    if serving == "fp32":
        return w.view(torch.uint8).reshape(w.shape[0], -1), None
    if serving == "fp16":
        return w.half().view(torch.uint8).reshape(w.shape[0], -1), None
    import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

    bits = SERVING_BITS[serving]
    q = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, bits)
    return q[:, :-4].contiguous(), q[:, -4:].contiguous()  # the op puts scale and bias last, the TBE first


def serving_tbe(tables: list[PrunedTable], pooling: str = "sum", device: torch.device | str = "cpu"):
    """An FBGEMM `IntNBitTableBatchedEmbeddingBagsCodegen` serving the pruned tables (one feature
    per table, in order), with array index remapping, fp32 output.

    Example:
        >>> t = prune_rows("t", torch.tensor([[0.5, 0.25, 0.0, 1.0]]), serving="int8")
        >>> serving_tbe([t])(torch.tensor([0], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32)).shape
        torch.Size([1, 4])
    """
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen
    from fbgemm_gpu.split_embedding_configs import SparseType

    if not tables:
        raise ExportError("serving_tbe: no tables to serve")
    device = torch.device(device)
    location = EmbeddingLocation.HOST if device.type == "cpu" else EmbeddingLocation.DEVICE
    # FBGEMM needs at least one physical row; a table with every row dropped keeps one zero row
    # that no id maps to.
    weights = [t.weight if t.kept_rows else torch.zeros(1, t.dim) for t in tables]
    specs = [(t.name, int(w.shape[0]), t.dim, _sparse_type(t.serving), location) for t, w in zip(tables, weights)]
    modes = {"sum": PoolingMode.SUM, "mean": PoolingMode.MEAN}
    if pooling not in modes:
        raise ExportError(f"serving_tbe: pooling '{pooling}' is not served; use sum or mean")
    tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=specs, index_remapping=[t.index_remapping.to(device) for t in tables],
        pooling_mode=modes[pooling], device=device, output_dtype=SparseType.FP32)
    tbe.initialize_weights()
    tbe.assign_embedding_weights([tuple(x.to(device) if x is not None else None for x in stored_rows(w, t.serving))
                                  for t, w in zip(tables, weights)])
    return tbe


def export_dsl_tables(weights: dict[str, Tensor], masks: dict[str, Tensor] | None = None,
                      serving: str = "fp16") -> list[PrunedTable]:
    """Pruned inference tables of a DSL-trained model (weights by table name; masks from
    `DSLController.masks`, optional since inactive weights are already zero).

    Example:
        >>> [t.kept_rows for t in export_dsl_tables({"a": torch.eye(3)[:, :2]})]
        [2]
    """
    masks = masks or {}
    return [prune_rows(name, w, masks.get(name), serving) for name, w in weights.items()]


@register
class Pruned(CompressionMethod):
    """DSL-trained rows, exported with fully pruned rows removed (index remapping) and the rest
    stored as `params.serving` (fp16 by default). The planner's byte count is the upper bound
    before training (every row kept, plus the remap array); the export reports the actual bytes."""

    name = "pruned"

    def allowed_params(self) -> tuple[str, ...]:
        return ("serving", "rows_kept", "max_error")

    def _serving(self, spec: TableSpec) -> str:
        return spec.params.get("serving", "fp16")

    def check(self, spec: TableSpec) -> None:
        super().check(spec)
        _check_serving(self._serving(spec), spec.dim, f"table '{spec.name}'")
        err = spec.params.get("max_error")
        if err is not None and not (isinstance(err, (int, float)) and 0 <= err < 1):
            raise MethodParamsError(f"table '{spec.name}': params.max_error is {err!r}; give a relative error in [0, 1) "
                                    "(e.g. 0.05), or leave it out for fp16 rows")
        kept = spec.params.get("rows_kept")
        if kept is not None and not (isinstance(kept, int) and 1 <= kept <= spec.rows):
            raise MethodParamsError(f"table '{spec.name}': params.rows_kept is {kept!r}; give an integer in 1..{spec.rows} "
                                    "(the rows a row-mode DSL table keeps)")

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        """One table of `rows` rows, or for row-mode DSL (`params.rows_kept`) the kept rows plus one
        zero sentinel row that inactive ids are remapped to."""
        kept = spec.params.get("rows_kept")
        rows = spec.rows if kept is None else int(kept) + 1
        return [PhysicalTable("", rows, spec.dim, serving=self._serving(spec))]

    def export_row_table(self, spec: TableSpec, weight: Tensor, remap: Tensor) -> list[ExportedTable]:
        """The row-mode table as it trained: its kept physical rows and the remap (sentinel -> -1; a
        trained, non-zero sentinel row is kept and inactive ids keep reading it)."""
        kept = int(spec.params["rows_kept"])
        index = remap.detach().to(torch.int32).cpu().clone()
        _check_finite(spec.name, weight)
        weight = weight.detach().float().cpu()
        if bool(weight[kept:kept + 1].any()):
            return [ExportedTable(weight[:kept + 1].contiguous(), self._serving(spec), index)]
        index[index >= kept] = -1
        return [ExportedTable(weight[:kept].contiguous(), self._serving(spec), index)]

    def spec_bytes(self, spec: TableSpec) -> int:
        return super().spec_bytes(spec) + spec.rows * REMAP_BYTES_PER_ID

    def export_tables(self, spec: TableSpec, weights: list[Tensor]) -> list[ExportedTable]:
        max_error = spec.params.get("max_error")
        if max_error is not None:  # the smallest of fp16 / int8 / int4 kept rows within the error bound
            t = compact_rows(spec.name, weights[0], max_error=float(max_error))
        else:
            t = prune_rows(spec.name, weights[0], serving=self._serving(spec))
        # FBGEMM needs at least one physical row: an all-pruned table keeps one zero row no id maps to
        weight = t.weight if t.kept_rows else torch.zeros(1, t.dim)
        return [ExportedTable(weight, t.serving, t.index_remapping)]

"""The interface every compression method implements, and the registry of methods by exact name.

A method turns one `TableSpec` into
- physical tables (`PhysicalTable`: rows x dim, and how the exported artifact stores them),
  which `PlanEmbeddings` puts in its one TorchRec EmbeddingBagCollection;
- an id transform run before the lookup (`transform_ids`: one id tensor per physical table);
- a combiner module run after the lookup (`combiner`: physical outputs -> one `[N, spec.dim]`);
- a byte count (`table_bytes`) the planner uses, and an export (`export_tables`) to the compact
  form FBGEMM serves (fp32 / fp16 / int8 / int4 rows in an IntNBit TBE, optional index remapping).

Methods register themselves with `@register`; `get_method` rejects unknown names with the list
of known ones. `dense` and `drop` live here; the others in their own modules.

Example:
    >>> from embeddings.spec import TableSpec
    >>> m = get_method("dense")
    >>> t = TableSpec(name="t_C1", features=["C1"], rows=100, dim=8)
    >>> [(p.rows, p.dim) for p in m.physical_tables(t)], m.table_bytes(100, 8, {})
    ([(100, 8)], 3200)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from embeddings.errors import MethodParamsError, UnknownMethodError
from embeddings.spec import TableSpec

SERVING_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ROW_SCALE_BIAS_BYTES = 4  # FBGEMM's row-wise int8/int4 rows end with an fp16 scale and bias


def row_bytes(dim: int, serving: str) -> int:
    """Bytes of one stored row of `dim` values in the `serving` form (FBGEMM's layout, no padding).

    Example:
        >>> row_bytes(16, "fp32"), row_bytes(16, "int8"), row_bytes(16, "int4")
        (64, 20, 12)
    """
    bits = SERVING_BITS[serving]
    extra = ROW_SCALE_BIAS_BYTES if bits <= 8 else 0
    return math.ceil(dim * bits / 8) + extra


@dataclass(frozen=True)
class PhysicalTable:
    """One physical table of a method: `suffix` names it inside its TableSpec ("" when single)."""

    suffix: str
    rows: int
    dim: int
    serving: str = "fp32"  # storage in the exported artifact: fp32 | fp16 | int8 | int4
    init_range: tuple[float, float] | None = None  # uniform init; None: TorchRec's default

    @property
    def bytes(self) -> int:
        return self.rows * row_bytes(self.dim, self.serving)


@dataclass
class ExportedTable:
    """A physical table in its inference form: compact fp32 rows, the serving type, an optional
    remapping (original id -> compact row, -1 = pruned; FBGEMM's `index_remapping`)."""

    weight: torch.Tensor
    serving: str = "fp32"
    index_remapping: torch.Tensor | None = None


class IdentityCombiner(nn.Module):
    """The combiner of single-table methods: the one physical output is the embedding."""

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0]


class CompressionMethod:
    """Base class of a compression method. Subclasses set `name` and override what differs.

    `fused_optimizer`: whether the physical tables can be trained by FBGEMM's fused sparse
    optimizer (all methods here can; a method that needs the raw weights in forward cannot).
    """

    name: ClassVar[str] = ""
    fused_optimizer: ClassVar[bool] = True
    any_ids: ClassVar[bool] = False  # True when ids need not be < spec.rows (hashing)

    # -- parameters ------------------------------------------------------------------------
    def check(self, spec: TableSpec) -> None:
        """Raise MethodParamsError when `spec.params` cannot be used (default: no params)."""
        unknown = set(spec.params) - set(self.allowed_params())
        if unknown:
            raise MethodParamsError(
                f"table '{spec.name}': method '{self.name}' has no parameter(s) {sorted(unknown)}; "
                f"allowed: {sorted(self.allowed_params()) or 'none'}")

    def allowed_params(self) -> tuple[str, ...]:
        return ()

    def serving_of(self, spec: TableSpec) -> str:
        """How the physical tables are stored when exported: `params.serving` (fp32 by default)
        for methods that allow it (hashing, qr, mixed_dim can also be served fp16 / int8 / int4)."""
        return spec.params.get("serving", "fp32")

    def _check_serving(self, spec: TableSpec) -> None:
        s = spec.params.get("serving", "fp32")
        if s not in SERVING_BITS:
            raise MethodParamsError(f"table '{spec.name}': params.serving={s!r} is unknown; use one of {', '.join(SERVING_BITS)}")
        if s == "int4" and any(p.dim % 4 for p in self.physical_tables(spec)):
            raise MethodParamsError(f"table '{spec.name}': int4 rows need dims divisible by 4 (FBGEMM alignment)")

    def _param(self, spec: TableSpec, key: str, kind: type, lo: float | None = None) -> Any:
        if key not in spec.params:
            raise MethodParamsError(f"table '{spec.name}': method '{self.name}' needs params.{key}; add it to the plan")
        v = spec.params[key]
        if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool or (lo is not None and v < lo):
            raise MethodParamsError(f"table '{spec.name}': params.{key}={v!r} must be a {kind.__name__}"
                                    + (f" >= {lo}" if lo is not None else ""))
        return v

    # -- structure -------------------------------------------------------------------------
    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        """The physical tables this method stores for `spec` (default: one rows x dim fp32 table)."""
        return [PhysicalTable("", spec.rows, spec.dim)]

    def transform_ids(self, spec: TableSpec, ids: torch.Tensor) -> list[torch.Tensor]:
        """Ids for each physical table, in `physical_tables` order (default: unchanged)."""
        return [ids]

    def combiner(self, spec: TableSpec) -> nn.Module:
        """Module mapping the physical outputs ([N, p.dim] each) to [N, spec.dim] while training."""
        return IdentityCombiner()

    def serving_combiner(self, spec: TableSpec) -> nn.Module:
        """The combiner of the exported module (default: the training combiner, same weights)."""
        return self.combiner(spec)

    # -- memory ----------------------------------------------------------------------------
    def table_bytes(self, rows: int, dim: int, params: dict[str, Any]) -> int:
        """Bytes this method uses for a rows x dim table with `params` (physical tables + combiner)."""
        spec = TableSpec(name="_", features=["_"], rows=rows, dim=dim, method=self.name, params=dict(params))
        return self.spec_bytes(spec)

    def spec_bytes(self, spec: TableSpec) -> int:
        tables = sum(p.bytes for p in self.physical_tables(spec))
        extra = sum(t.numel() * t.element_size() for t in self.combiner(spec).state_dict().values())
        return tables + extra

    # -- export ----------------------------------------------------------------------------
    def export_tables(self, spec: TableSpec, weights: list[torch.Tensor]) -> list[ExportedTable]:
        """Inference form of the trained physical weights (default: the rows as they are)."""
        return [ExportedTable(w.detach().float().cpu().contiguous(), p.serving)
                for w, p in zip(weights, self.physical_tables(spec))]


_REGISTRY: dict[str, CompressionMethod] = {}


def register(cls: type[CompressionMethod]) -> type[CompressionMethod]:
    """Class decorator: add a method to the registry under its exact `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"compression method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> CompressionMethod:
    """The registered method called exactly `name`; unknown names raise UnknownMethodError."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"compression method '{name}' is unknown; use one of {', '.join(known_methods())}") from None


def known_methods() -> list[str]:
    return sorted(_REGISTRY)


@register
class Dense(CompressionMethod):
    """Plain fp32 rows, one per id."""

    name = "dense"


@register
class Drop(CompressionMethod):
    """The feature is removed from the model: no table, no bytes, no output."""

    name = "drop"

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        return []

    def table_bytes(self, rows: int, dim: int, params: dict[str, Any]) -> int:
        return 0

"""Quotient-remainder compositional embeddings (Shi et al., 2020).

Two tables: `ceil(rows / m)` quotient rows looked up by `id // m` and `m` remainder rows looked up
by `id % m`; an id's embedding combines its two rows, so every id gets a distinct vector from
`rows/m + m` rows. `params.op` picks the combination, taken after the lookup:
- `mult` (default, the paper's best): the element-wise product. Exact per id for unpooled
  lookups and for bags holding one id (the CTR case); for bags of several ids it is the product
  of the pooled quotient and remainder vectors, an approximation.
- `add`: the sum. Linear, so exact for bags of any size under sum and mean pooling; the planner
  uses it for multi-valued features.

Example:
    >>> import torch
    >>> from embeddings.spec import TableSpec
    >>> t = TableSpec(name="t", features=["C3"], rows=1000, dim=8, method="qr", params={"m": 32})
    >>> m = get_method("qr")
    >>> [(p.suffix, p.rows) for p in m.physical_tables(t)]
    [('q', 32), ('r', 32)]
    >>> [x.tolist() for x in m.transform_ids(t, torch.tensor([70]))]
    [[2], [6]]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from embeddings.compression.base import CompressionMethod, PhysicalTable, get_method, register
from embeddings.errors import MethodParamsError
from embeddings.spec import TableSpec


class ProductCombiner(nn.Module):
    """Element-wise product of the quotient and remainder embeddings."""

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] * parts[1]


class SumCombiner(nn.Module):
    """Sum of the quotient and remainder embeddings (exact for pooled bags)."""

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] + parts[1]


OPS = {"mult": ProductCombiner, "add": SumCombiner}


@register
class QuotientRemainder(CompressionMethod):
    """`params.m`: remainder rows (the quotient table gets ceil(rows / m)); `params.op`: mult | add."""

    name = "qr"

    def allowed_params(self) -> tuple[str, ...]:
        return ("m", "serving", "op")

    def check(self, spec: TableSpec) -> None:
        super().check(spec)
        self._param(spec, "m", int, 1)
        self._check_serving(spec)
        op = spec.params.get("op", "mult")
        if op not in OPS:
            raise MethodParamsError(f"table '{spec.name}': params.op={op!r} is unknown; use one of {sorted(OPS)}")

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        m = int(spec.params["m"])
        return [PhysicalTable("q", math.ceil(spec.rows / m), spec.dim, serving=self.serving_of(spec)),
                PhysicalTable("r", m, spec.dim, serving=self.serving_of(spec),
                              init_range=(0.5, 1.5) if spec.params.get("op", "mult") == "mult" else None)]

    def transform_ids(self, spec: TableSpec, ids: torch.Tensor) -> list[torch.Tensor]:
        m = int(spec.params["m"])
        return [torch.div(ids, m, rounding_mode="floor"), torch.remainder(ids, m)]

    def combiner(self, spec: TableSpec) -> nn.Module:
        return OPS[spec.params.get("op", "mult")]()

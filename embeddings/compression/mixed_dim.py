"""Mixed-dimension embeddings: store `params.stored_dim` columns, project up to the common `dim`.

The projection is a learned `dim x stored_dim` matrix (no bias) applied after the lookup; being
linear, projecting the pooled vector equals pooling the projected rows, so it is exact for bags.
The planner gives low-frequency / low-score features the small dimension. Stored dims are
multiples of 4, as FBGEMM's fused TBE kernels require.

Example:
    >>> from embeddings.spec import TableSpec
    >>> t = TableSpec(name="t", features=["C5"], rows=1000, dim=16, method="mixed_dim", params={"stored_dim": 4})
    >>> get_method("mixed_dim").spec_bytes(t)      # 1000*4*4 table + 16*4*4 projection
    16256
"""

from __future__ import annotations

import torch
from torch import nn

from embeddings.compression.base import CompressionMethod, PhysicalTable, get_method, register
from embeddings.errors import MethodParamsError
from embeddings.spec import TableSpec


class Projection(nn.Module):
    """Linear map from the stored dimension to the model's dimension."""

    def __init__(self, stored_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(stored_dim, dim, bias=False)

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(parts[0])


@register
class MixedDim(CompressionMethod):
    """`params.stored_dim` (< dim) columns per row and a learned projection to `dim`."""

    name = "mixed_dim"

    def allowed_params(self) -> tuple[str, ...]:
        return ("stored_dim", "serving")

    def check(self, spec: TableSpec) -> None:
        super().check(spec)
        sd = self._param(spec, "stored_dim", int, 1)
        if sd > spec.dim:
            raise MethodParamsError(f"table '{spec.name}': params.stored_dim={sd} exceeds dim={spec.dim}; use a smaller stored_dim")
        if sd % 4:
            raise MethodParamsError(f"table '{spec.name}': params.stored_dim={sd} must be divisible by 4 "
                                    "(FBGEMM's fused TBE kernels need it); use 4, 8, ...")
        self._check_serving(spec)

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        return [PhysicalTable("", spec.rows, int(spec.params["stored_dim"]), serving=self.serving_of(spec))]

    def combiner(self, spec: TableSpec) -> nn.Module:
        return Projection(int(spec.params["stored_dim"]), spec.dim)

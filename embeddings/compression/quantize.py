"""Row-wise fp16 / int8 / int4 storage served by FBGEMM's IntNBit TBE, with optional int8/int4 QAT.

Training keeps fp32 rows; the export quantizes each row with FBGEMM's own codec
(`FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf`: per-row fp16 scale and bias, values rounded to
2^bits - 1 levels between the row's min and max). With `params.qat: true` the forward pass
fake-quantizes the looked-up vectors the same way, with a straight-through gradient, so the
model learns under the error it will be served with. The fake-quant is applied after the lookup:
identical to quantizing the row for bags of one id (the CTR case); for multi-id bags it quantizes
the pooled vector (an approximation of row quantization).

Error bound of one served value: half a quantization step of its row plus the fp16 rounding of
the scale and bias, see `quantization_error_bound`.

Example:
    >>> from embeddings.spec import TableSpec
    >>> t = TableSpec(name="t", features=["C2"], rows=1000, dim=16, method="int8")
    >>> get_method("int8").spec_bytes(t)      # 1000 rows * (16 + 4) bytes
    20000
"""

from __future__ import annotations

import torch
from torch import nn

from embeddings.compression.base import SERVING_BITS, CompressionMethod, PhysicalTable, get_method, register
from embeddings.errors import MethodParamsError
from embeddings.spec import TableSpec


def fake_quantize_rows(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize each row like FBGEMM (fp16 scale and bias), gradient straight through.

    Example:
        >>> x = torch.tensor([[0.0, 0.5, 1.0]])
        >>> fake_quantize_rows(x, 8).sub(x).abs().max().item() < 1 / 255
        True
    """
    levels = (1 << bits) - 1
    # FBGEMM's order of operations: bias = fp16(min), scale = fp16((max - bias) / levels), then
    # round((x - bias) * (1 / scale)), so the served rows are reproduced bit for bit
    bias = x.min(dim=1, keepdim=True).values.half().float()
    hi = x.max(dim=1, keepdim=True).values
    scale = ((hi - bias) / levels).half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((x - bias) * (1.0 / scale)), 0, levels) * scale + bias
    return x + (q - x).detach()


def quantization_error_bound(rows: torch.Tensor, serving: str) -> torch.Tensor:
    """Per-row bound on |served - fp32| for `rows` stored as `serving` (fp32 | fp16 | int8 | int4)."""
    bits = SERVING_BITS[serving]
    amax = rows.abs().max(dim=1).values
    if bits == 32:
        return torch.zeros_like(amax)
    if bits == 16:
        return amax * 2.0 ** -11 + 1e-7
    span = rows.max(dim=1).values - rows.min(dim=1).values
    step = span / ((1 << bits) - 1)
    # half a step, plus fp16 rounding of scale (times up to `levels` steps) and of bias
    return step / 2 + span * 2.0 ** -11 + amax * 2.0 ** -11 + 1e-6


class FakeQuantCombiner(nn.Module):
    """QAT: fake-quantize the looked-up vectors to `bits` bits per row (straight-through)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return fake_quantize_rows(parts[0], self.bits) if self.training else parts[0]


class _RowWise(CompressionMethod):
    serving = "fp32"

    def allowed_params(self) -> tuple[str, ...]:
        return ()

    def check(self, spec: TableSpec) -> None:
        super().check(spec)
        if "qat" in spec.params:
            self._param(spec, "qat", bool)
        if self.serving == "int4" and spec.dim % 4:
            raise MethodParamsError(f"table '{spec.name}': int4 rows need dim divisible by 4 (FBGEMM alignment), got {spec.dim}")

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        return [PhysicalTable("", spec.rows, spec.dim, serving=self.serving)]

    def combiner(self, spec: TableSpec) -> nn.Module:
        if spec.params.get("qat"):
            return FakeQuantCombiner(SERVING_BITS[self.serving])
        return super().combiner(spec)

    def serving_combiner(self, spec: TableSpec) -> nn.Module:
        return super().combiner(spec)  # the TBE itself serves the quantized rows


@register
class FP16(_RowWise):
    """Rows served in fp16 (post-training)."""

    name = "fp16"
    serving = "fp16"


@register
class Int8(_RowWise):
    """Rows served in int8 with a per-row fp16 scale and bias; `params.qat` trains under fake-quant."""

    name = "int8"
    serving = "int8"

    def allowed_params(self) -> tuple[str, ...]:
        return ("qat",)


@register
class Int4(_RowWise):
    """Rows served in int4 with a per-row fp16 scale and bias; `params.qat` trains under fake-quant."""

    name = "int4"
    serving = "int4"

    def allowed_params(self) -> tuple[str, ...]:
        return ("qat",)

"""The dense part of a trained DLRM re-arranged for CPU scoring: the same function without its big copies.

TorchRec's DLRM forward concatenates the dense output with the pooled embeddings (B x (F+1) x D), gathers
the upper triangle of the pairwise dots with a two-index advanced index, concatenates the dense output with
those dots and then (`concat_embeddings`) with every pooled embedding again, so the over arch's first layer
reads a fresh B x (D + T + F*D) tensor: on a 26-table, dim-64 model that is 2,079 floats a row written
and read once more, the largest share of the forward pass after the dot products. `ServedDLRM` computes the
same logits with the over arch's first weight split by column blocks (dense + dots | pooled embeddings), so
`W @ [x, pooled] = W_x @ x + W_p @ pooled` reads the embedding lookup's output where it lies, and takes
the triangle with one `index_select` on the flattened dots. Only the order of float additions differs from
the trained module (about 1e-7 relative), so the precision-reduced serving modes use it
(`serving.RunModel.served`); `eager` and `as-trained` keep the trained module's exact numbers.

`bf16_dots=True` computes the pairwise dots in bfloat16 (inputs rounded to 8 mantissa bits, products summed
by oneDNN in fp32, about 4e-3 of the largest dot; well inside an int8 / int4 table's own rounding), which a
CPU with native bf16 dot products (`native_bf16`: AVX512-BF16 or AMX) runs about twice as fast as fp32's
small-matrix bmm (26 tables, dim 64: 4.2-5.6 -> 2.2-2.4 us/row, one thread), and takes the over arch's first
layer on [dense output, pooled embeddings] as one bf16 matmul straight from that bf16 input (no concatenation;
the dots' columns stay fp32): int4 forward 9.7 -> 7.4 us/row, scores moved by at most 9e-4 (int4 itself moves
them by up to 2e-2 from fp32).

Example:
    >>> import torch
    >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    >>> from models.dlrm import DLRM
    >>> _ = torch.manual_seed(0)
    >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10,
    ...     feature_names=["f1", "f2"])])
    >>> m = DLRM(ebc, 2, 4, dense_in=3, dense_arch=[8], over_arch=[8], concat_embeddings=True).eval()
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f1", "f2"], values=torch.tensor([1, 2, 3, 4]),
    ...     lengths=torch.tensor([1, 1, 1, 1]))
    >>> x = torch.rand(2, 3)
    >>> torch.allclose(ServedDLRM(m)(x, kjt), m(x, kjt), atol=1e-6)
    True
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from models.dlrm import DLRM


class ServedDLRM(nn.Module):
    """`model`'s logits (a trained, eval-mode `DLRM` with TorchRec's pairwise-dot interaction), see module doc.
    Shares `model`'s sparse module and dense arch; copies the over arch's weights (a few KB)."""

    def __init__(self, model: DLRM, bf16_dots: bool = False) -> None:
        super().__init__()
        self.dots_dtype = torch.bfloat16 if bf16_dots else None
        if type(model.inter_arch).__name__ != "InteractionArch":
            raise TypeError(f"ServedDLRM serves TorchRec's InteractionArch, not {type(model.inter_arch).__name__}")
        self.sparse, self.dense_arch = model.sparse, model.dense_arch
        self.F, self.D, self.dense_in = model.num_features, model.embedding_dim, model.dense_in
        self.concat = model.concat_embeddings
        tri = model.inter_arch.triu_indices
        self.register_buffer("flat", (tri[0] * (self.F + 1) + tri[1]).clone(), persistent=False)
        linears = [m for m in model.over_arch.modules() if isinstance(m, nn.Linear)]
        first = linears[0]
        w = first.weight.detach()
        width = self.D + len(self.flat)  # dense output + pairwise dots
        if w.shape[1] != width + (self.F * self.D if self.concat else 0):
            raise ValueError(f"over arch input {w.shape[1]} is not {width} (+ F*D when concatenating embeddings)")
        self.first = nn.Linear(width, w.shape[0])
        self.first.weight = nn.Parameter(w[:, :width].clone(), requires_grad=False)
        self.first.bias = nn.Parameter(first.bias.detach().clone(), requires_grad=False)
        self.first_pooled = None
        if self.concat:
            self.first_pooled = nn.Linear(self.F * self.D, w.shape[0], bias=False)
            self.first_pooled.weight = nn.Parameter(w[:, width:].clone(), requires_grad=False)
        self.rest = nn.ModuleList(copy_linear(m) for m in linears[1:])
        if bf16_dots:  # the first layer's [dense output, pooled embeddings] columns, read from the bf16 `combined`
            pooled_w = w[:, width:] if self.concat else torch.zeros(w.shape[0], self.F * self.D)
            self.register_buffer("w_combined", torch.cat([w[:, :self.D], pooled_w], 1).t().to(torch.bfloat16).contiguous(),
                                 persistent=False)
            self.register_buffer("w_dots", w[:, self.D:width].t().contiguous(), persistent=False)
        self.eval()

    def forward(self, dense: torch.Tensor, sparse) -> torch.Tensor:
        """Logits of shape (B,), as `DLRM.forward`."""
        pooled = self.sparse(sparse).values()
        b = pooled.shape[0]
        if self.dense_in == 0:
            dense = torch.ones(b, 1, device=pooled.device, dtype=pooled.dtype)
        d = self.dense_arch(dense)
        combined = torch.empty(b, self.F + 1, self.D, dtype=self.dots_dtype or pooled.dtype, device=pooled.device)
        combined[:, 0] = d
        combined[:, 1:] = pooled.view(b, self.F, self.D)
        dots = torch.bmm(combined, combined.transpose(1, 2)).view(b, -1).index_select(1, self.flat).to(pooled.dtype)
        if self.dots_dtype is not None:
            h = torch.addmm(self.first.bias, dots, self.w_dots)
            h += torch.mm(combined.view(b, -1), self.w_combined)
        else:
            h = self.first(torch.cat((d, dots), dim=1))
            if self.first_pooled is not None:
                h = h + self.first_pooled(pooled)
        for layer in self.rest:
            h = layer(torch.relu(h))
        return h.squeeze(-1)


def copy_linear(m: nn.Linear) -> nn.Linear:
    """A frozen copy of `m`."""
    out = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    out.load_state_dict(m.state_dict())
    return out.requires_grad_(False)


@functools.lru_cache(maxsize=1)
def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 natively (the `avx512_bf16` or `amx_bf16` flag); False where unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags

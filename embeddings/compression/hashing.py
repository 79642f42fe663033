"""The hashing trick: id -> hash(id) mod buckets, one table of `buckets` rows.

Collisions share a row; the hash is Knuth's multiplicative hash on 32 bits (the same in numpy,
torch and at serving time), so the mapping is reproducible anywhere.

Example:
    >>> import torch
    >>> from embeddings.spec import TableSpec
    >>> t = TableSpec(name="t", features=["C3"], rows=1000, dim=8, method="hashing", params={"buckets": 10})
    >>> get_method("hashing").transform_ids(t, torch.tensor([0, 1, 2]))[0].tolist()
    [0, 1, 6]
"""

from __future__ import annotations

import torch

from embeddings.compression.base import CompressionMethod, PhysicalTable, get_method, register
from embeddings.spec import TableSpec

HASH_MULTIPLIER = 2654435761  # Knuth: an odd constant close to 2**32 / golden ratio
HASH_MASK = 0xFFFFFFFF


def hash_bucket(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """Bucket of each id: ((id * 2654435761) mod 2**32) mod buckets (int64, exact for ids < 2**31).

    Example:
        >>> hash_bucket(torch.tensor([0, 1, 5]), 7).tolist()
        [0, 5, 6]
    """
    return ((ids.long() * HASH_MULTIPLIER) & HASH_MASK) % buckets


@register
class Hashing(CompressionMethod):
    """`params.buckets` rows shared by all ids through `hash_bucket`."""

    name = "hashing"
    any_ids = True

    def allowed_params(self) -> tuple[str, ...]:
        return ("buckets", "serving")

    def check(self, spec: TableSpec) -> None:
        super().check(spec)
        self._param(spec, "buckets", int, 1)
        self._check_serving(spec)

    def physical_tables(self, spec: TableSpec) -> list[PhysicalTable]:
        return [PhysicalTable("", int(spec.params["buckets"]), spec.dim, serving=self.serving_of(spec))]

    def transform_ids(self, spec: TableSpec, ids: torch.Tensor) -> list[torch.Tensor]:
        return [hash_bucket(ids, int(spec.params["buckets"]))]

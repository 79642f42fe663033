"""`TableSpec` and `EmbeddingPlan`: what each embedding table is (the role of TorchRec's EmbeddingBagConfig).

The planner writes an `EmbeddingPlan` as `embedding_plan.json`; the table builder turns it into
TorchRec modules. One record per table: features, rows, dim, method and its parameters, bytes
(fp32 equivalent and actual), DSL target density.

Example:
    >>> t = TableSpec(name="t_C1", features=["C1"], rows=1000, dim=16)
    >>> t.fp32_bytes
    64000
    >>> plan = EmbeddingPlan(tables=[t], budget_bytes=100_000)
    >>> EmbeddingPlan.from_json(plan.to_json()).tables[0].rows
    1000
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TableSpec:
    """One embedding table.

    `rows` is the number of ids the features use (the vocabulary size, ids 0..rows-1);
    `method` says how those ids are stored ("dense", "hashing", "qr", "mixed_dim", "int8",
    "int4", "fp16", ...), with its parameters in `params` (e.g. {"buckets": 4096} for hashing).
    `dim` is the dimension the model sees; a method may store fewer columns and project up.
    """

    name: str
    features: list[str]
    rows: int
    dim: int
    method: str = "dense"
    params: dict[str, Any] = field(default_factory=dict)
    pooling: str = "sum"
    dsl_density: float | None = None
    score: float | None = None
    bytes: int | None = None  # actual bytes under `method`, filled by the planner / method

    @property
    def fp32_bytes(self) -> int:
        """Bytes of the same table stored dense in fp32."""
        return self.rows * self.dim * 4


@dataclass
class EmbeddingPlan:
    """All tables of a model, and the memory budget they were planned for."""

    tables: list[TableSpec]
    budget_bytes: int | None = None
    dropped_features: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes if t.bytes is not None else t.fp32_bytes for t in self.tables)

    @property
    def fp32_bytes(self) -> int:
        return sum(t.fp32_bytes for t in self.tables)

    def table_for(self, feature: str) -> TableSpec:
        for t in self.tables:
            if feature in t.features:
                return t
        raise KeyError(feature)

    def to_json(self) -> str:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        d["fp32_bytes"] = self.fp32_bytes
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EmbeddingPlan":
        d = json.loads(text)
        d.pop("total_bytes", None)
        d.pop("fp32_bytes", None)
        d["tables"] = [TableSpec(**t) for t in d["tables"]]
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingPlan":
        return cls.from_json(Path(path).read_text())

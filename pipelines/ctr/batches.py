"""Encoded Parquet splits → `Batch` (dense tensor, KeyedJaggedTensor of ids, labels).

One conversion (`batch_from_arrow`) serves both paths: Ray Data (`iter_batches(batch_format=
"pyarrow")` on a worker's shard) and single-process streaming with pyarrow (`parquet_batches`),
so a data set larger than memory streams in both. Single-id columns give one id per bag;
list columns (multi-hot) give bags of any length. Ids are checked against their table before
any kernel sees them.

Example:
    >>> import pyarrow as pa
    >>> spec = BatchSpec(label="label", dense=["I1"], sparse=["C1"], rows={"C1": 10})
    >>> t = pa.table({"label": [1, 0], "I1": [0.5, 1.0], "C1": [3, 4]})
    >>> b = batch_from_arrow(t, spec)
    >>> b.dense.shape, b.sparse.keys(), b.labels.tolist()
    (torch.Size([2, 1]), ['C1'], [1.0, 0.0])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.spec import EmbeddingPlan
from pipelines.runtime.errors import EncodedDataError, IdOutOfRangeError

SPLITS = ("train", "validation", "test")


@dataclass
class Batch:
    """One training batch: `dense` (B, n_dense) float32, `sparse` KJT of ids, `labels` (B,) float32."""

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(self.dense.to(device, non_blocking=non_blocking),
                     self.sparse.to(device, non_blocking=non_blocking),
                     self.labels.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class BatchSpec:
    """Which columns feed the model and how many rows each feature's table has (for the id check)."""

    label: str
    dense: list[str]
    sparse: list[str]
    rows: dict[str, int]
    source: str = "encoded"

    @property
    def columns(self) -> list[str]:
        return [self.label, *self.dense, *self.sparse]


@dataclass
class EncodedSchema:
    """`schema.json` of the vocab stage (extra keys are kept in `extra`).

    `categorical`: int64 id columns (one id per row); `buckets`: int64 bucket ids of dense columns
    (`<col>__bucket`); `multi_valued`: list<int64> id columns (bags)."""

    label: str
    dense: list[str]
    categorical: list[str]
    vocab_sizes: dict[str, int]
    rows: dict[str, int]
    extra: dict[str, Any]
    multi_valued: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)

    @property
    def sparse(self) -> list[str]:
        """Every column that can feed an embedding table: single ids, dense buckets, then bags."""
        cat = set(self.categorical)
        return [*self.categorical, *[c for c in [*self.buckets, *self.multi_valued] if c not in cat]]

    @classmethod
    def load(cls, path: Path) -> "EncodedSchema":
        path = Path(path)
        if not path.exists():
            raise EncodedDataError(f"{path}: schema.json not found; run the 'vocab' stage first (it writes encoded/ and schema.json)")
        d = json.loads(path.read_text())
        missing = [k for k in ("label", "dense", "categorical") if k not in d]
        if missing:
            raise EncodedDataError(f"{path}: key '{missing[0]}' is missing; it must come from the 'vocab' stage")
        known = {"label", "dense", "categorical", "vocab_sizes", "rows", "multi_valued", "buckets"}
        return cls(label=d["label"], dense=list(d["dense"]), categorical=list(d["categorical"]),
                   vocab_sizes={k: int(v) for k, v in d.get("vocab_sizes", {}).items()},
                   rows={k: int(v) for k, v in d.get("rows", {}).items()},
                   extra={k: v for k, v in d.items() if k not in known},
                   multi_valued=list(d.get("multi_valued", [])), buckets=list(d.get("buckets", [])))


def batch_spec(schema: EncodedSchema, plan: EmbeddingPlan, source: str = "encoded") -> BatchSpec:
    """The model's inputs: schema's label and dense columns, the plan's features in table order."""
    sparse = [f for t in plan.tables for f in t.features]
    unknown = [f for f in sparse if f not in schema.sparse]
    if unknown:
        raise EncodedDataError(f"embedding_plan.json: feature '{unknown[0]}' is not a categorical, bucket or multi-valued column "
                               f"of schema.json ({', '.join(schema.sparse[:8])}...); make the plan from the same data")
    if not sparse:
        raise EncodedDataError("embedding_plan.json: the plan has no tables; every feature was dropped, raise the budget")
    return BatchSpec(label=schema.label, dense=list(schema.dense), sparse=sparse,
                     rows={f: t.rows for t in plan.tables for f in t.features}, source=source)


def _ids(col: pa.ChunkedArray | pa.Array, feature: str, spec: BatchSpec) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of one id column; single ids give lengths of 1."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if col.null_count:
        raise EncodedDataError(f"{spec.source}: column '{feature}' has {col.null_count} null ids; "
                               "the vocab stage encodes missing as id 0, re-run it")
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        offsets = col.offsets.to_numpy()
        values = col.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        lengths = np.diff(offsets).astype(np.int64)
    else:
        values = col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        lengths = np.ones(n, dtype=np.int64)
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        rows = spec.rows[feature]
        if hi >= rows or lo < 0:
            raise IdOutOfRangeError(feature, hi if hi >= rows else lo, rows, spec.source)
    return values, lengths


def batch_from_arrow(table: pa.Table | pa.RecordBatch, spec: BatchSpec) -> Batch:
    """Convert one Arrow batch of encoded rows into a `Batch` (ids checked against table sizes)."""
    names = set(table.schema.names)
    missing = [c for c in spec.columns if c not in names]
    if missing:
        raise EncodedDataError(f"{spec.source}: column '{missing[0]}' is missing; the encoded split and "
                               "schema.json / embedding_plan.json must come from the same run")
    n = table.num_rows
    labels = table.column(spec.label).to_numpy(zero_copy_only=False).astype(np.float32)
    if spec.dense:
        dense = np.empty((n, len(spec.dense)), dtype=np.float32)
        for j, c in enumerate(spec.dense):
            col = table.column(c)
            if col.null_count:
                raise EncodedDataError(f"{spec.source}: dense column '{c}' has nulls; the vocab stage fills missing with 0")
            dense[:, j] = col.to_numpy(zero_copy_only=False)
        if not np.isfinite(dense).all():
            bad = spec.dense[int(np.where(~np.isfinite(dense).all(axis=0))[0][0])]
            raise EncodedDataError(f"{spec.source}: dense column '{bad}' holds NaN/inf; fix the encoding")
    else:
        dense = np.zeros((n, 0), dtype=np.float32)
    vals, lens = zip(*(_ids(table.column(f), f, spec) for f in spec.sparse))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(spec.sparse), values=torch.from_numpy(np.concatenate(vals)),
        lengths=torch.from_numpy(np.concatenate(lens)))
    return Batch(torch.from_numpy(dense), kjt, torch.from_numpy(labels))


def rebatch(tables: Iterable[pa.Table | pa.RecordBatch], batch_size: int, drop_last: bool = False) -> Iterator[pa.Table]:
    """Re-chunk a stream of Arrow pieces into tables of exactly `batch_size` rows (last may be short)."""
    buf: list[pa.Table] = []
    have = 0
    for t in tables:
        if isinstance(t, pa.RecordBatch):
            t = pa.Table.from_batches([t])
        buf.append(t)
        have += t.num_rows
        while have >= batch_size:
            whole = pa.concat_tables(buf)
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            buf, have = ([rest] if rest.num_rows else []), rest.num_rows
    if have and not drop_last:
        yield pa.concat_tables(buf)


def split_path(encoded: Path, split: str) -> Path:
    """`encoded/<split>/`, checked to exist and hold Parquet."""
    p = Path(encoded) / split
    if not p.exists() or not any(p.rglob("*.parquet")):
        raise EncodedDataError(f"{p}: no Parquet files; run the 'vocab' stage (it writes encoded/{split}/)")
    return p


def parquet_batches(path: Path, spec: BatchSpec, batch_size: int, drop_last: bool = False,
                    skip: int = 0) -> Iterator[Batch]:
    """Stream a Parquet folder as `Batch`es of `batch_size` rows (files in name order), skipping `skip` batches."""
    ds = pads.dataset(parquet_files(path), format="parquet")
    pieces = ds.to_batches(columns=spec.columns, batch_size=max(batch_size, 1024))
    for i, t in enumerate(rebatch(pieces, batch_size, drop_last)):
        if i >= skip:
            yield batch_from_arrow(t, spec)


def row_range_batches(path: Path, spec: BatchSpec, batch_size: int, start: int, stop: int) -> Iterator[Batch]:
    """Batches of rows [start, stop) of a Parquet folder (files in name order), streamed.

    Example::

        rows = count_rows(path); m = rows // world
        row_range_batches(path, spec, 512, rank * m, (rank + 1) * m)
    """
    ds = pads.dataset(parquet_files(path), format="parquet")
    seen = 0

    def window() -> Iterator[pa.Table]:
        nonlocal seen
        for piece in ds.to_batches(columns=spec.columns, batch_size=max(batch_size, 1024)):
            lo, hi = max(start - seen, 0), min(stop - seen, piece.num_rows)
            seen += piece.num_rows
            if hi > lo:
                yield pa.Table.from_batches([piece.slice(lo, hi - lo)])
            if seen >= stop:
                return

    for t in rebatch(window(), batch_size):
        yield batch_from_arrow(t, spec)


def table_batches(table: pa.Table, spec: BatchSpec, batch_size: int, drop_last: bool = False,
                  skip: int = 0) -> Iterator[Batch]:
    """Batches of an in-memory Arrow table, in row order, as zero-copy slices; `skip` batches are left out.

    What a Ray worker iterates over its materialized share of a small train split: the same pyarrow batching as
    `parquet_batches`, without Ray Data's per-batch iterator machinery.

    Example:
        >>> t = pa.table({"label": [1, 0, 1], "I1": [0.5, 1.0, 2.0], "C1": [3, 4, 5]})
        >>> spec = BatchSpec(label="label", dense=["I1"], sparse=["C1"], rows={"C1": 10})
        >>> [b.labels.tolist() for b in table_batches(t, spec, 2, skip=0)]
        [[1.0, 0.0], [1.0]]
    """
    stop = table.num_rows - table.num_rows % batch_size if drop_last else table.num_rows
    for start in range(skip * batch_size, stop, batch_size):
        yield batch_from_arrow(table.slice(start, min(batch_size, stop - start)), spec)


# The Ray Train dataset the workers stream the train split from (split across them by Ray Data); a
# materialized split is no dataset: each worker gets its Arrow share as an object ref (`LoopJob.train_shares`)
TRAIN_DATASET = "train"


def ray_batches(shard: Any, spec: BatchSpec, batch_size: int, drop_last: bool = False, skip: int = 0,
                prefetch_batches: int = 2, local_shuffle_buffer_size: int | None = None,
                local_shuffle_seed: int | None = None) -> Iterator[Batch]:
    """Batches of a Ray Data shard (`ray.train.get_dataset_shard(...)`), streamed as Arrow; with a local shuffle
    buffer, rows are shuffled in it (seeded: the same seed gives the same order)."""
    it = shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=drop_last,
                            prefetch_batches=prefetch_batches, local_shuffle_buffer_size=local_shuffle_buffer_size,
                            local_shuffle_seed=local_shuffle_seed)
    for i, t in enumerate(it):
        if i >= skip:
            yield batch_from_arrow(t, spec)


def parquet_files(path: Path) -> list[str]:
    """The Parquet files of a split folder in name order (Spark leaves _SUCCESS / .crc files beside them)."""
    return sorted(str(p) for p in Path(path).rglob("*.parquet"))


def uncompressed_bytes(path: Path, columns: list[str]) -> int:
    """Bytes of `columns` in a Parquet folder once decompressed, from the footers (no data read).

    Example:
        >>> import tempfile, pyarrow.parquet as pq
        >>> d = Path(tempfile.mkdtemp())
        >>> pq.write_table(pa.table({"y": [0, 1, 0], "x": [1.0, 2.0, 3.0]}), d / "part-0.parquet")
        >>> pq.write_table(pa.table({"y": [1, 1], "x": [4.0, 5.0]}), d / "part-1.parquet")
        >>> uncompressed_bytes(d, ["y"]) < uncompressed_bytes(d, ["y", "x"]), uncompressed_bytes(d, [])
        (True, 0)
    """
    import pyarrow.parquet as pq

    wanted, total = set(columns), 0
    for f in parquet_files(path):
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            total += sum(rg.column(c).total_uncompressed_size for c in range(rg.num_columns)
                         if rg.column(c).path_in_schema.split(".")[0] in wanted)
    return total


def equal_shares(path: Path, columns: list[str], world: int) -> list[pa.Table]:
    """`world` equal consecutive row ranges of a Parquet folder (files in name order), read into memory;
    the remainder rows are dropped, as Ray Data's `streaming_split(equal=True)` does.

    Example (5 rows in two files, 2 workers: rows 0-1 and 2-3, the 5th dropped):
        >>> import tempfile, pyarrow.parquet as pq
        >>> d = Path(tempfile.mkdtemp())
        >>> pq.write_table(pa.table({"y": [0, 1, 0], "x": [1.0, 2.0, 3.0]}), d / "part-0.parquet")
        >>> pq.write_table(pa.table({"y": [1, 1], "x": [4.0, 5.0]}), d / "part-1.parquet")
        >>> [t.column("x").to_pylist() for t in equal_shares(d, ["x"], 2)]
        [[1.0, 2.0], [3.0, 4.0]]
    """
    table = pads.dataset(parquet_files(path), format="parquet").to_table(columns=columns)
    share = table.num_rows // world
    return [table.slice(r * share, share) for r in range(world)]


def count_rows(path: Path) -> int:
    """Rows of a Parquet folder from the file footers (no data read)."""
    return sum(pads.dataset(f, format="parquet").count_rows() for f in parquet_files(path))

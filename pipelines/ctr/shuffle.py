"""The seeded shuffle of the training order: a pure function of (run seed, epoch), so every epoch sees a new
order, two runs with the same seed see the same one, and a run resumed mid-epoch rebuilds the epoch's order
and skips exactly the batches it had consumed.

Three readers use it (`training.shuffle`, on by default):
- single process: `shuffled_parquet_batches` reads the split's row groups in a seeded order into a buffer of
  `training.shuffle_buffer_rows` rows and emits each buffer in a seeded row order; a split that fits the
  buffer is shuffled whole (a uniform permutation of all rows);
- Ray, materialized shares: every worker sees all shares and takes its rows of one global seeded permutation
  (`shuffled_share`), so rows move within and across shares every epoch;
- Ray, streamed: the driver randomizes the block order once (seeded) and each worker shuffles its stream in a
  local buffer seeded by (seed, epoch, rank) (`stream_seed`).

Example:
    >>> epoch_permutation(6, seed=0, epoch=0).tolist() == epoch_permutation(6, seed=0, epoch=0).tolist()
    True
    >>> sorted(epoch_permutation(6, seed=0, epoch=1).tolist())
    [0, 1, 2, 3, 4, 5]
    >>> share_indices(7, world=2, rank=1, seed=0, epoch=0).size
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.ctr.batches import Batch, BatchSpec, batch_from_arrow, parquet_files, rebatch


def epoch_rng(seed: int, epoch: int, *salt: int) -> np.random.Generator:
    """The generator of one epoch's order (independent of torch's RNG, so checkpoints need not carry it)."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, *salt]))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of `range(n)` for this seed and epoch."""
    return epoch_rng(seed, epoch).permutation(n)


def share_indices(n: int, world: int, rank: int, seed: int, epoch: int) -> np.ndarray:
    """Rank `rank`'s rows of the epoch's global permutation of `n` rows: `n // world` of them (the remainder is
    left out, as an equal split does); the ranks' rows never overlap."""
    share = n // world
    return epoch_permutation(n, seed, epoch)[rank * share:(rank + 1) * share]


def shuffled_share(table: pa.Table, world: int, rank: int, seed: int, epoch: int) -> pa.Table:
    """This rank's rows of `table` (all ranks' rows together) in the epoch's order, as one contiguous table."""
    return table.take(pa.array(share_indices(table.num_rows, world, rank, seed, epoch))).combine_chunks()


def stream_seed(seed: int, epoch: int, rank: int) -> int:
    """The local shuffle seed of a rank's Ray Data stream in one epoch."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank]).generate_state(1)[0])


def _row_groups(path: Path) -> list[tuple[str, int]]:
    return [(f, g) for f in parquet_files(path) for g in range(pq.ParquetFile(f).metadata.num_row_groups)]


def shuffled_tables(path: Path, columns: list[str], seed: int, epoch: int, buffer_rows: int) -> Iterator[pa.Table]:
    """The rows of a Parquet folder in the epoch's order: row groups in a seeded order, gathered into buffers of
    at least `buffer_rows` rows, each emitted in a seeded row order (the whole split when it fits one buffer)."""
    rng = epoch_rng(seed, epoch)
    groups = _row_groups(path)
    buf: list[pa.Table] = []
    have = 0

    def flush() -> pa.Table:
        whole = pa.concat_tables(buf)
        return whole.take(pa.array(rng.permutation(whole.num_rows)))

    files: dict[str, pq.ParquetFile] = {}
    for i in rng.permutation(len(groups)):
        f, g = groups[int(i)]
        reader = files.setdefault(f, pq.ParquetFile(f))
        t = reader.read_row_group(g, columns=columns)
        buf.append(t)
        have += t.num_rows
        if have >= buffer_rows:
            yield flush()
            buf, have = [], 0
    if have:
        yield flush()


def shuffled_parquet_batches(path: Path, spec: BatchSpec, batch_size: int, seed: int, epoch: int, buffer_rows: int,
                             drop_last: bool = False, skip: int = 0) -> Iterator[Batch]:
    """`parquet_batches` in the epoch's shuffled order (see `shuffled_tables`), skipping `skip` batches."""
    pieces = shuffled_tables(Path(path), spec.columns, seed, epoch, buffer_rows)
    for i, t in enumerate(rebatch(pieces, batch_size, drop_last)):
        if i >= skip:
            yield batch_from_arrow(t, spec)

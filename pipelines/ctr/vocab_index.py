"""A vocabulary (strings → ids) as an open-addressing hash table of 64-bit string hashes, in numpy.

Scoring with a production-sized vocabulary (millions of values a column) must not re-hash the vocabulary
per batch (`pyarrow.compute.index_in` does) nor chase Python string objects through a hash of millions
(`pandas.Index.get_indexer`: about 1 µs a value, cache misses). Here each distinct value of a batch is
hashed straight from the Arrow buffers (vectorised: a random 64-bit weight per byte position, summed per
string, then mixed) and found with one or two probes into a flat uint64 table; the candidate's string is
then compared with the value, so the answer is exact whatever the hash does. A vocabulary whose values
share a hash (or repeat a value) is answered by a pandas index instead, and one of at most `SMALL` values by
`index_in` (re-hashing a few thousand values costs less than the steps above).

Example:
    >>> idx = VocabIndex(pa.array(["a", "bc", "d"]), np.array([2, 3, 4]))
    >>> idx.lookup(pa.array(["d", "zz", "a", "", "bc"]), unknown=1).tolist()
    [4, 1, 2, 1, 3]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_EMPTY = np.uint64(0)  # a slot no hash takes (hashes are forced odd)
SMALL = 4096  # up to this many values, pyarrow's index_in (it hashes the vocabulary on each call)


class _Weights:
    """One random odd 64-bit weight per byte position, grown on demand (the same for every process)."""

    weights = np.random.default_rng(20261207).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)

    @classmethod
    def upto(cls, n: int) -> np.ndarray:
        if n > len(cls.weights):
            more = np.random.default_rng(len(cls.weights)).integers(1, 2**63, size=n, dtype=np.uint64) | np.uint64(1)
            cls.weights = np.concatenate([cls.weights, more])
        return cls.weights[:n]


def string_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash (odd, never 0) of each string of `values` (nulls hash as empty strings).

    Example:
        >>> h = string_hashes(pa.array(["ab", "ba", "ab", ""]))
        >>> bool(h[0] == h[2]), bool(h[0] != h[1]), bool((h % 2 == 1).all())
        (True, True, True)
    """
    values = values.cast(pa.string())
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + n + 1].astype(np.int64)
    data = values.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if values.null_count:
        lengths = np.where(values.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    starts = offsets[:-1]
    total = int(lengths.sum())
    with np.errstate(over="ignore"):
        if total:
            owner = np.repeat(np.arange(n), lengths)
            first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            pos = np.arange(total) - first[owner]
            byte = raw[(starts[owner] + pos)].astype(np.uint64) + np.uint64(1)
            terms = byte * _Weights.upto(int(lengths.max()))[pos]
            h = np.zeros(n, dtype=np.uint64)
            _sum_by_owner(h, terms, first, lengths)
        else:
            h = np.zeros(n, dtype=np.uint64)
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return h | np.uint64(1)


def _sum_by_owner(h: np.ndarray, terms: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> None:
    """h[i] = sum of terms[first[i] : first[i] + lengths[i]] (uint64, wrapping), for the non-empty strings."""
    nonempty = lengths > 0
    h[nonempty] = np.add.reduceat(terms, first[nonempty])


class VocabIndex:
    """Values → ids of one feature's vocabulary (see module doc)."""

    def __init__(self, known: pa.Array, ids: np.ndarray) -> None:
        self.known = known.cast(pa.string())
        self.ids = np.asarray(ids, dtype=np.int64)
        self.pandas: pd.Index | None = None
        self.small = len(self.known) <= SMALL
        if self.small:
            return
        h = string_hashes(self.known)
        size = 1 << max(int(2 * max(len(h), 1) - 1).bit_length(), 4)  # load factor <= 1/2
        self.mask = np.uint64(size - 1)
        self.table = np.full(size, _EMPTY, dtype=np.uint64)
        self.slot_row = np.full(size, -1, dtype=np.int64)
        todo = np.arange(len(h))
        probe = 0
        while len(todo):  # linear probing, all rows of a round at once; of rows wanting one free slot, one wins
            slot = ((h[todo] + np.uint64(probe)) & self.mask).astype(np.int64)
            free = np.flatnonzero(self.table[slot] == _EMPTY)
            cand, cslot = todo[free], slot[free]
            self.table[cslot] = h[cand]
            won = self.table[cslot] == h[cand]  # equal hashes (a repeated value) all 'win' one slot: counted below
            self.slot_row[cslot[won]] = cand[won]
            placed = np.zeros(len(todo), dtype=bool)
            placed[free[won]] = True
            todo = todo[~placed]
            probe += 1
        if np.count_nonzero(self.table) < len(h):  # a repeated value, or a hash shared by two values
            idx = pd.Index(self.known.to_numpy(zero_copy_only=False), dtype=object)
            first = ~idx.duplicated()
            self.pandas, self.ids = idx[first], self.ids[first]

    def positions(self, values: pa.Array) -> np.ndarray:
        """Row of each value in the vocabulary, -1 when it is not there (values without nulls)."""
        if self.small:
            return pc.fill_null(pc.index_in(values, value_set=self.known), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if self.pandas is not None:
            return self.pandas.get_indexer(values.to_numpy(zero_copy_only=False))
        h = string_hashes(values)
        out = np.full(len(h), -1, dtype=np.int64)
        todo = np.arange(len(h))
        probe = 0
        while len(todo):
            slot = ((h[todo] + np.uint64(probe)) & self.mask).astype(np.int64)
            key = self.table[slot]
            hit = key == h[todo]
            out[todo[hit]] = self.slot_row[slot[hit]]
            todo = todo[~hit & (key != _EMPTY)]
            probe += 1
        found = np.flatnonzero(out >= 0)
        if len(found):  # exact: the candidate's string must be the value
            same = pc.equal(self.known.take(pa.array(out[found])), values.take(pa.array(found)))
            out[found[~same.to_numpy(zero_copy_only=False)]] = -1
        return out

    def lookup(self, values: pa.Array, unknown: int) -> np.ndarray:
        """Ids of `values` (no nulls), `unknown` for a value not in the vocabulary."""
        pos = self.positions(values)
        return np.where(pos >= 0, self.ids[np.maximum(pos, 0)], unknown).astype(np.int64)

    def save(self, folder: Path) -> bool:
        """Write the index to `folder` (the values as one Arrow IPC record batch, the ids and the hash table as
        .npy) for `VocabIndex.open` to memory-map; False (nothing written) for a vocabulary answered by pandas.

        Example:
            >>> import tempfile
            >>> d = Path(tempfile.mkdtemp())
            >>> VocabIndex(pa.array(["a", "bc"]), np.array([2, 3])).save(d)
            True
            >>> VocabIndex.open(d).lookup(pa.array(["bc", "x"]), unknown=1).tolist()
            [3, 1]
        """
        if self.pandas is not None:
            return False
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(folder / "values.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, pa.schema([("value", pa.string())])) as w:
            w.write_batch(pa.record_batch([self.known], names=["value"]))
        np.save(folder / "ids.npy", self.ids)
        if not self.small:
            np.save(folder / "table.npy", self.table)
            np.save(folder / "slot_row.npy", self.slot_row)
        return True

    @classmethod
    def open(cls, folder: Path) -> "VocabIndex":
        """An index written by `save`, its arrays memory-mapped (read-only, shared by every process on the host)."""
        folder = Path(folder)
        self = cls.__new__(cls)
        batch = pa.ipc.open_file(pa.memory_map(str(folder / "values.arrow"))).get_batch(0)
        self.known, self.pandas = batch.column(0), None
        self.ids = np.load(folder / "ids.npy", mmap_mode="r")
        self.small = not (folder / "table.npy").exists()
        if not self.small:
            self.table = np.load(folder / "table.npy", mmap_mode="r")
            self.slot_row = np.load(folder / "slot_row.npy", mmap_mode="r")
            self.mask = np.uint64(len(self.table) - 1)
        return self

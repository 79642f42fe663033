"""Units of scoring work: row slices of the parsed input, each read, scored and written by one model process.

`predict` cuts the parsed rows (its Parquet files in name order, one row sequence) into units of a whole
number of batches. A unit is read straight from the Parquet files by the process that scores it (only the
row groups it overlaps), scored batch by batch and written as `part-<unit>.parquet`, so the row order is the
file names' and no rows travel through Ray's object store: Ray Data hands the model actors only the unit
descriptors (`UnitScorer`, `map_batches` over `ray.data.from_items`). The single process scores the very
same units and batches in turn, so both modes give the same scores.

Example:
    >>> [(u.start, u.rows) for u in plan_units(300, 128)]
    [(0, 128), (128, 128), (256, 44)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Unit:
    """Rows `start` .. `start + rows` of the input (in file-name order), written as `part-<index>.parquet`."""

    index: int
    start: int
    rows: int


def plan_units(total_rows: int, unit_rows: int) -> list[Unit]:
    """`total_rows` cut into consecutive units of `unit_rows` rows (the last may be short)."""
    return [Unit(i, s, min(unit_rows, total_rows - s)) for i, s in enumerate(range(0, total_rows, unit_rows))]


def part_name(unit: int) -> str:
    """The output file of a unit; names sort in row order."""
    return f"part-{unit:05d}.parquet"


class UnitReader:
    """Reads any row range of a sequence of Parquet files, opening only the row groups it overlaps.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> pq.write_table(pa.table({"x": [0, 1, 2]}), d / "a.parquet", row_group_size=2)
        >>> pq.write_table(pa.table({"x": [3, 4]}), d / "b.parquet")
        >>> r = UnitReader([str(d / "a.parquet"), str(d / "b.parquet")])
        >>> r.rows, r.read(1, 3).column("x").to_pylist()
        (5, [1, 2, 3])
    """

    def __init__(self, files: list[str]) -> None:
        self.files = [pq.ParquetFile(f) for f in files]
        # (file, row group, first row of it in the whole sequence, its rows)
        self.groups: list[tuple[int, int, int, int]] = []
        at = 0
        for fi, f in enumerate(self.files):
            for g in range(f.metadata.num_row_groups):
                n = f.metadata.row_group(g).num_rows
                if n:
                    self.groups.append((fi, g, at, n))
                at += n
        self.rows = at
        self.schema = self.files[0].schema_arrow if self.files else pa.schema([])
        self._last: tuple[tuple[int, int], pa.Table] | None = None  # the last row group read: units in order share one

    def read(self, start: int, rows: int) -> pa.Table:
        """Rows `start` .. `start + rows` as one table (a row group the previous call read is not read again)."""
        end = start + rows
        parts = []
        for fi, g, first, n in self.groups:
            if first >= end or first + n <= start:
                continue
            if self._last is not None and self._last[0] == (fi, g):
                t = self._last[1]
            else:
                t = self.files[fi].read_row_group(g)
                self._last = ((fi, g), t)
            parts.append(t.slice(max(start - first, 0), min(end, first + n) - max(start, first)))
        return pa.concat_tables(parts) if parts else self.schema.empty_table()


def score_unit(scorer, reader: UnitReader, unit: Unit, out: Path, batch_size: int) -> int:
    """Read `unit`, score it with `scorer` (a `serving.Scorer`: the unit encoded at once, the model run on
    batches of `batch_size` rows) and write `out/part-<index>.parquet`, one row group a batch; returns the
    rows written (an empty unit writes no file)."""
    rows = reader.read(unit.start, unit.rows)
    if rows.num_rows:
        pq.write_table(scorer(rows, batch_size), Path(out) / part_name(unit.index), row_group_size=batch_size)
    return rows.num_rows


class UnitScorer:
    """A model actor for Ray Data: loads the run's model once, then scores the units it is handed
    (`map_batches(UnitScorer, batch_size=1, ...)` over unit descriptors) and returns their rows written."""

    def __init__(self, run: str, serving: str, keep: list[str], label: str | None, files: list[str], out: str,
                 batch_size: int, threads: int | None = None) -> None:
        from pipelines.ctr.serving import Scorer

        self.scorer = Scorer(run, serving, keep=keep, label=label, threads=threads)
        self.reader, self.out, self.batch_size = UnitReader(files), Path(out), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        units = [Unit(int(i), int(s), int(n)) for i, s, n in zip(batch["index"], batch["start"], batch["rows"])]
        written = [score_unit(self.scorer, self.reader, u, self.out, self.batch_size) for u in units]
        return {"index": np.array([u.index for u in units], dtype=np.int64), "written": np.array(written, dtype=np.int64)}

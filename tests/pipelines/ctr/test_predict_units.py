"""`predict_units`: the parsed rows cut into units that are read straight from Parquet (row groups and files
crossed), scored in whole batches and written one file a unit, in row order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipelines.ctr.predict_units import Unit, UnitReader, part_name, plan_units, score_unit


def _files(tmp_path) -> list[str]:
    # 23 rows over three files: row groups of 4 / 3 rows, and an empty file between
    pq.write_table(pa.table({"line": list(range(0, 10))}), tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(pa.table({"line": pa.array([], pa.int64())}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"line": list(range(10, 23))}), tmp_path / "c.parquet", row_group_size=3)
    return [str(tmp_path / n) for n in ("a.parquet", "b.parquet", "c.parquet")]


def test_units_cover_every_row_once_in_order_across_row_groups_and_files(tmp_path):
    reader = UnitReader(_files(tmp_path))
    units = plan_units(reader.rows, 6)
    assert reader.rows == 23 and [(u.start, u.rows) for u in units] == [(0, 6), (6, 6), (12, 6), (18, 5)]
    got = [reader.read(u.start, u.rows).column("line").to_pylist() for u in units]
    assert got == [list(range(s, min(s + 6, 23))) for s in range(0, 23, 6)]


def test_units_read_in_order_read_each_row_group_once(tmp_path):
    reader = UnitReader(_files(tmp_path))
    calls: list[tuple[int, int]] = []
    for fi, f in enumerate(reader.files):
        read = f.read_row_group
        f.read_row_group = lambda g, _read=read, _fi=fi: calls.append((_fi, g)) or _read(g)
    got = [reader.read(u.start, u.rows).column("line").to_pylist() for u in plan_units(reader.rows, 6)]
    assert sum(got, []) == list(range(23))
    # groups a: 0-3, 4-7, 8-9; c: 10-12, 13-15, 16-18, 19-21, 22: units 0-5 and 6-11 share a's group 4-7
    assert calls == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2), (2, 3), (2, 4)]
    assert reader.read(5, 2).column("line").to_pylist() == [5, 6]   # out of order: read again, same rows


def test_a_unit_is_scored_at_once_with_the_batch_size_and_written_as_its_own_part(tmp_path):
    reader = UnitReader(_files(tmp_path))
    seen: list[tuple[int, int]] = []

    def scorer(rows: pa.Table, batch_size: int) -> pa.Table:
        seen.append((rows.num_rows, batch_size))
        return pa.table({"line": rows.column("line"), "score": pc.multiply(rows.column("line"), 0.5)})

    out = tmp_path / "out"
    out.mkdir()
    unit = plan_units(reader.rows, 8)[1]                      # rows 8 .. 15
    assert score_unit(scorer, reader, unit, out, batch_size=3) == 8
    assert seen == [(8, 3)] and part_name(1) == "part-00001.parquet"
    f = pq.ParquetFile(out / "part-00001.parquet")
    assert [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)] == [3, 3, 2]
    t = pads.dataset(str(out / "part-00001.parquet")).to_table()
    assert t.column("line").to_pylist() == list(range(8, 16)) and t.column("score").to_pylist()[0] == 4.0
    assert score_unit(scorer, reader, plan_units(reader.rows, 8)[2], out, batch_size=3) == 7
    assert score_unit(scorer, reader, Unit(9, 23, 0), out, batch_size=3) == 0 and not (out / part_name(9)).exists()

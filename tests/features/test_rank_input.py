"""`features rank --input FILE`: RFC 4180 CSV (newlines and doubled quotes inside quotes), a UTF-8 BOM,
and one-line errors for a folder of CSV parts and a truncated .gz."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from features.config import ColumnRoles, DatasetConfig, RankConfig
from features.errors import DataError

pytestmark = pytest.mark.spark


def _rank(spark, path, out):
    from features.outrank import rank

    ds = DatasetConfig(path=path, format="csv", kind="ctr", roles=ColumnRoles(label="label"))
    s = rank({"raw": path}, out, ds, RankConfig(pairs_top_k=0, heuristic="mi"), spark)
    spec = {r["name"]: r for r in json.loads((out / "feature_spec.json").read_text())["features"]}
    return s, spec


def test_quoted_newlines_and_doubled_quotes_are_one_record(spark, tmp_path):
    """#18.4: a newline inside quotes split the record in two (`1,016 malformed` of 2,000)."""
    rows = ['1,"two\nlines",1', '0,"say ""hi""",2', '1,"a,b",3', '0,plain,4'] * 25
    path = tmp_path / "q.csv"
    path.write_text("label,a,b\n" + "\n".join(rows) + "\n")
    s, spec = _rank(spark, path, tmp_path / "out")
    assert (s["rows_in"], s["rows_malformed"], s["rows_out"]) == (100, 0, 100)
    assert spec["a"]["cardinality"] == 4 and spec["a"]["role"] == "categorical" and spec["b"]["role"] == "dense"


@pytest.mark.parametrize("quoted", [False, True])
def test_utf8_bom_is_not_part_of_the_label_name(spark, tmp_path, quoted):
    """#18.10: the file was opened as utf-8, so the first column was '\\ufefflabel'."""
    body = "".join(f'{i % 2},{"x" if i % 2 else chr(34) + "y" + chr(34) if quoted else "y"},{i}\n' for i in range(40))
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufefflabel,a,b\n" + body).encode("utf-8"))
    s, spec = _rank(spark, path, tmp_path / "out")
    assert (s["rows_in"], s["rows_malformed"], s["rows_out"]) == (40, 0, 40)
    assert spec["a"]["cardinality"] == 2


def test_truncated_gzip_is_a_one_line_error(spark, tmp_path):
    """#18.6: click printed `Aborted.` (gzip's EOFError) for a truncated .gz."""
    data = gzip.compress(("label,a\n" + "".join(f"{i % 2},v{i}\n" for i in range(20000))).encode(), mtime=0)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        _rank(spark, path, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(f"{path}: the gzip file is truncated or corrupt") and "gzip -t" in msg and "\n" not in msg


def test_cli_folder_of_csv_parts_is_a_one_line_error(tmp_path):
    """#18.6: any folder was taken as Parquet (a 274-line Java trace)."""
    import subprocess
    import sys

    (tmp_path / "parts").mkdir()
    for k in range(2):
        (tmp_path / "parts" / f"part-{k}.csv").write_text("label,a\n1,x\n0,y\n")
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "features", "rank", "--input", str(tmp_path / "parts"),
                           "--label", "label", "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and f"{tmp_path / 'parts'}: a folder of CSV/TSV parts (part-0.csv, ...)" in lines[0]
    assert "join the parts into one file" in lines[0]

"""Ingest: typed Parquet, quarantine with real line numbers and reasons, balanced counts, one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from features.config import ColumnRoles, DatasetConfig, IngestConfig, ItemTableConfig
from features.errors import ConfigError, DataError
from features.ingest import ingest

pytestmark = pytest.mark.spark

REASON_OF_KIND = {"wrong_column_count": "wrong_column_count:expected 41, got 4", "non_numeric": "non_numeric:I1",
                  "empty_line": "empty_line"}


def test_ctr_bad_lines_quarantined_at_their_line_numbers(spark, ctr_ingested):
    s, truth = ctr_ingested["summary"], ctr_ingested["truth"]
    assert s["rows_in"] == truth["rows"] + len(truth["bad_rows"]) == 20_009
    assert s["rows_ok"] == truth["rows"] and s["rows_quarantined"] == 9
    assert s["rows_in"] == s["rows_ok"] + s["rows_quarantined"]
    q = spark.read.parquet(str(ctr_ingested["dir"] / "quarantine")).orderBy("line").collect()
    # truth lists data-line numbers (header not counted); the quarantine holds file line numbers
    assert [r["line"] for r in q] == [b["data_line"] + 1 for b in truth["bad_rows"]]
    assert [r["reason"] for r in q] == [REASON_OF_KIND[b["kind"]] for b in truth["bad_rows"]]
    assert {Path(r["file"]).name for r in q} == {"train.tsv"}
    assert q[0]["raw"] == "1\t1700000000\t5\t3"
    assert s["quarantine_reasons"] == {"wrong_column_count": 3, "non_numeric": 3, "empty_line": 3}


def test_ctr_data_is_typed_and_sorted_by_time(spark, ctr_ingested):
    df = spark.read.parquet(str(ctr_ingested["dir"] / "data"))
    types = dict(df.dtypes)
    assert types["label"] == "int" and types["ts"] == "bigint" and types["I1"] == "double" and types["C1"] == "string"
    # part files in name order hold rows in time order (Spark itself may read the files in any order)
    import pyarrow.parquet as pq

    parts = sorted((ctr_ingested["dir"] / "data").glob("part-*.parquet"))
    ts = [t for f in parts for t in pq.read_table(f, columns=["ts"]).column("ts").to_pylist()]
    assert len(parts) == 4 and len(ts) == 20_000 and ts == sorted(ts)
    labels = {r["label"] for r in df.select("label").distinct().collect()}
    assert labels == {0, 1}
    # missing fields are nulls, not errors: C12 is 30% missing in the generator
    missing = df.where("C12 is null").count() / df.count()
    assert 0.25 < missing < 0.35


def _write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def _tiny_ds(path: Path, fmt: str = "csv", **kw) -> DatasetConfig:
    roles = dict(label="y", timestamp="t", dense=["x"], categorical=["c"])
    roles.update(kw.pop("roles", {}))
    return DatasetConfig(path=path, format=fmt, kind="ctr", roles=ColumnRoles(**roles), **kw)


def test_line_numbers_survive_many_splits_and_several_files(spark, tmp_path):
    """Line numbers stay exact when Spark splits a file into many blocks, across plain and gzip files."""
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = ["y,t,x,c"]
    bad = {}
    for i in range(2, 1202):
        if i % 97 == 0:
            lines.append("1,17,oops,a")
            bad[("a.csv", i)] = "non_numeric:x"
        elif i % 131 == 0:
            lines.append("2,17,1.0,a")
            bad[("a.csv", i)] = "label_not_binary:y"
        else:
            lines.append(f"{i % 2},{1000 + i},{i}.5,v{i % 7}")
    _write(raw / "a.csv", "\n".join(lines) + "\n")
    _write(raw / "b.csv", "y,t,x,c\n1,5,1,a\n,6,1,a\n0,7,1,a,extra\n", gz=True)
    bad[("b.csv.gz", 3)] = "missing_value:y"
    bad[("b.csv.gz", 4)] = "wrong_column_count:expected 4, got 5"
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2000")  # about 10 blocks for a.csv
    try:
        s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw),
                   IngestConfig(max_quarantine_share=0.2, partitions=3), spark)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    q = spark.read.parquet(str(tmp_path / "out" / "quarantine")).collect()
    assert {(Path(r["file"]).name, r["line"]): r["reason"] for r in q} == bad
    assert s["rows_in"] == 1200 + 3 and s["rows_quarantined"] == len(bad)
    ok = spark.read.parquet(str(tmp_path / "out" / "data"))
    assert ok.count() == s["rows_ok"] == 1203 - len(bad)
    # the typed value of a good line is its own: line i holds x = i.5 and t = 1000 + i
    row = ok.where("t = 1500").first()
    assert row["x"] == 500.5 and row["c"] == f"v{500 % 7}" and row["y"] == 0


def test_quoted_csv_utf8_nan_and_nulls(spark, tmp_path):
    body = ('y,t,x,c\n'
            '1,10,2.5,"a,b"\n'          # a quoted field holding the delimiter
            '0,11,,\n'                   # missing dense and categorical: nulls
            '0,12,NaN,z\n'               # NaN is not a number we accept
            '1,13,1,\xff\n'.encode("latin-1").decode("latin-1"))
    raw = tmp_path / "q.csv"
    raw.write_bytes(body.encode("latin-1"))  # the \xff byte is invalid UTF-8
    s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(max_quarantine_share=0.6), spark)
    q = {r["line"]: r["reason"] for r in spark.read.parquet(str(tmp_path / "out" / "quarantine")).collect()}
    assert q == {4: "not_finite:x", 5: "invalid_utf8"}
    rows = {r["t"]: r for r in spark.read.parquet(str(tmp_path / "out" / "data")).collect()}
    assert rows[10]["c"] == "a,b" and rows[10]["x"] == 2.5
    assert rows[11]["x"] is None and rows[11]["c"] is None
    assert s["rows_in"] == 4 and s["rows_ok"] == 2


def test_label_threshold_and_declared_columns(spark, tmp_path):
    raw = _write(tmp_path / "r.data", "1|10|5|100\n2|11|3|101\n3|10|4|102\n")
    ds = DatasetConfig(path=raw, format="csv", delimiter="|", header=False, columns=["u", "i", "rating", "t"],
                       kind="ctr", roles=ColumnRoles(label="rating", label_threshold=4, timestamp="t", categorical=["u", "i"]))
    s = ingest({"raw": raw}, tmp_path / "out", ds, IngestConfig(), spark)
    got = sorted((r["t"], r["rating"]) for r in spark.read.parquet(str(tmp_path / "out" / "data")).collect())
    assert got == [(100, 1), (101, 0), (102, 1)] and s["rows_in"] == 3


def test_empty_file_is_a_one_line_error(spark, tmp_path):
    raw = _write(tmp_path / "empty.tsv", "")
    with pytest.raises(DataError, match=r"empty\.tsv: the file is empty") as e:
        ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw, "tsv"), IngestConfig(), spark)
    assert "\n" not in str(e.value)


def test_header_only_file_is_an_error(spark, tmp_path):
    raw = _write(tmp_path / "h.csv", "y,t,x,c\n")
    with pytest.raises(DataError, match="header but no data rows"):
        ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(), spark)


def test_missing_column_names_file_column_and_fix(spark, tmp_path):
    raw = _write(tmp_path / "m.csv", "y,t,x,cc\n1,2,3,a\n")
    with pytest.raises(DataError) as e:
        ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(), spark)
    msg = str(e.value)
    assert "m.csv" in msg and "column 'c'" in msg and "roles.categorical" in msg and "fix" in msg
    assert "\n" not in msg


def test_too_many_bad_rows_names_share_and_setting(spark, tmp_path):
    raw = _write(tmp_path / "b.csv", "y,t,x,c\n1,2,3,a\n1,2,bad,a\n")
    with pytest.raises(DataError) as e:
        ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(max_quarantine_share=0.1), spark)
    msg = str(e.value)
    assert "b.csv" in msg and "50.00%" in msg and "features.ingest.max_quarantine_share=0.1" in msg


def test_unknown_config_key_is_a_one_line_error(tmp_path):
    from jobs.config import parse_config

    data = {"dataset": {"path": "x.tsv", "kind": "ctr", "roles": {"label": "y"}},
            "features": {"ingest": {"max_quarantine_shar": 0.1}}}
    with pytest.raises(ConfigError, match=r"unknown key 'features.ingest.max_quarantine_shar'; did you mean 'max_quarantine_share'"):
        parse_config(data, "run.yaml", check_paths=False)


def test_items_table_with_arrays_and_duplicate_ids(spark, tmp_path):
    events = _write(tmp_path / "s.csv", "session_id,timestamp,item_id\ns1,1,i1\ns1,2,i2\n")
    items = _write(tmp_path / "items.csv", "item_id,brand,tokens\ni1,b1,red  shoe\ni2,,\ni1,b9,dup\n")
    ds = DatasetConfig(path=events, format="csv", kind="sessions",
                       roles=ColumnRoles(session_id="session_id", timestamp="timestamp", item_id="item_id"),
                       items=ItemTableConfig(path=items, categorical=["brand"], multi_valued=["tokens"]))
    s = ingest({"raw": events, "items": items}, tmp_path / "out", ds, IngestConfig(max_quarantine_share=0.5), spark)
    got = {r["item_id"]: (r["brand"], r["tokens"]) for r in spark.read.parquet(str(tmp_path / "out" / "items")).collect()}
    assert got == {"i1": ("b1", ["red", "shoe"]), "i2": (None, None)}
    q = spark.read.parquet(str(tmp_path / "out" / "quarantine_items")).collect()
    assert [(r["line"], r["reason"]) for r in q] == [(4, "duplicate_item_id:item_id=i1")]
    assert (s["items_rows_in"], s["items_rows_ok"], s["items_rows_quarantined"]) == (3, 2, 1)

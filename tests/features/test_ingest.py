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


def test_path_with_dotdot_segments_is_read(spark, tmp_path):
    """#13.10: `/x/sub/../d.csv` was read as an empty file (Spark reports the normalized path)."""
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "d.csv", "y,t,x,c\n1,17,1.0,a\n0,18,2.0,b\n")
    raw = tmp_path / "sub" / ".." / "d.csv"
    assert ".." in str(raw)
    s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(), spark)
    assert (s["rows_in"], s["rows_ok"]) == (2, 2)
    q = spark.read.parquet(str(tmp_path / "out" / "data")).collect()
    assert sorted(r["t"] for r in q) == [17, 18]


def test_dataset_paths_are_resolved_once_where_the_config_is_read(tmp_path):
    from jobs.config import parse_config

    data = {"dataset": {"path": f"{tmp_path}/a/../d.csv", "kind": "ctr", "roles": {"label": "y"},
                        "items": None}}
    cfg = parse_config(data, "run.yaml", base_dir=tmp_path, check_paths=False)
    assert cfg.dataset.path == tmp_path.resolve() / "d.csv"
    rel = parse_config({"dataset": {"path": "a/../../d.csv", "kind": "ctr", "roles": {"label": "y"}}},
                       "run.yaml", base_dir=tmp_path / "cfg", check_paths=False)
    assert rel.dataset.path == tmp_path.resolve() / "d.csv"


def test_stage_failure_message_does_not_end_a_sentence_twice():
    from jobs.pipeline import StageFailed

    msg = str(StageFailed("ingest", "d.csv: the file is empty (check dataset.path).", Path("runs/r"), None))
    assert ".." not in msg and "(check dataset.path). Earlier stages" in msg


def test_string_and_numeric_labels_with_label_positive(spark, tmp_path):
    """#13.6: a string label was refused as 100% malformed; label_positive lists the values meaning 1."""
    raw = _write(tmp_path / "s.csv", "y,t,x,c\n>50K,1,1,a\n<=50K,2,1,a\n >50K ,3,1,b\n<=50K,4,1,b\n")
    s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw, roles={"label_positive": ">50K"}), IngestConfig(), spark)
    got = sorted((r["t"], r["y"]) for r in spark.read.parquet(str(tmp_path / "out" / "data")).collect())
    assert got == [(1, 1), (2, 0), (3, 1), (4, 0)] and s["rows_quarantined"] == 0
    num = _write(tmp_path / "r.csv", "y,t,x,c\n4,1,1,a\n5.0,2,1,a\n3,3,1,b\n,4,1,b\n")
    s = ingest({"raw": num}, tmp_path / "out2", _tiny_ds(num, roles={"label_positive": [4, "5"]}),
               IngestConfig(max_quarantine_share=0.5), spark)
    got = sorted((r["t"], r["y"]) for r in spark.read.parquet(str(tmp_path / "out2" / "data")).collect())
    assert got == [(1, 1), (2, 1), (3, 0)] and s["quarantine_reasons"] == {"missing_value": 1}
    with pytest.raises(DataError, match=r"no row's 'y' is one of roles.label_positive \['yes'\]"):
        ingest({"raw": raw}, tmp_path / "out3", _tiny_ds(raw, roles={"label_positive": "yes"}), IngestConfig(), spark)
    with pytest.raises(ValueError, match="label_positive or roles.label_threshold, not both"):
        ColumnRoles(label="y", label_positive="a", label_threshold=1)


def test_malformed_share_error_names_column_commonest_reason_and_example(spark, tmp_path):
    """#13.6: the error said `100% malformed (non_numeric: 3)`, named no column and ended in `..` in a run."""
    raw = _write(tmp_path / "s.csv", "y,t,x,c\nyes,1,1,a\nno,2,1,a\nyes,3,oops,b\n1,4,1,b\n")
    with pytest.raises(DataError) as e:
        ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(), spark)
    msg = str(e.value)
    assert "3 of 4 rows (75.00%) are malformed" in msg
    assert "commonest: non_numeric in column 'y' (3 rows), e.g. s.csv line 2: 'yes,1,1,a'" in msg
    assert "roles.label_positive" in msg and msg.endswith("raise that setting.") and "\n" not in msg


def test_rfc4180_csv_quotes_escaped_quotes_delimiters_and_newlines(spark, tmp_path):
    """#18.4: a quoted field holding a newline was quarantined as `wrong_column_count`."""
    raw = _write(tmp_path / "r.csv", 'y,t,x,c\n'
                 '1,10,2.5,"a,b"\n'                  # line 2: a delimiter inside quotes
                 '0,11,1,"say ""hi"""\n'             # line 3: doubled quotes
                 '1,12,1,"two\nlines"\n'             # lines 4-5
                 '0,13,1,"three\r\nline\nfield"\r\n'  # lines 6-8, CRLF
                 '1,14,1,plain\n'                    # line 9
                 '1,15,1,"x",extra\n'                # line 10: 5 fields
                 '0,16,1,"never closed\n'            # line 11: the quote runs to the end of the file
                 '1,17,1,z\n')
    s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw), IngestConfig(max_quarantine_share=0.5), spark)
    rows = {r["t"]: r["c"] for r in spark.read.parquet(str(tmp_path / "out" / "data")).collect()}
    assert rows == {10: "a,b", 11: 'say "hi"', 12: "two\nlines", 13: "three\nline\nfield", 14: "plain"}
    q = {r["line"]: (r["reason"], r["raw"]) for r in spark.read.parquet(str(tmp_path / "out" / "quarantine")).collect()}
    assert q == {10: ("wrong_column_count:expected 4, got 5", '1,15,1,"x",extra'),
                 11: ("unclosed_quote", '0,16,1,"never closed\n1,17,1,z')}
    assert (s["rows_in"], s["rows_ok"], s["rows_quarantined"]) == (7, 5, 2)


def test_utf8_bom_and_truncated_gzip(spark, tmp_path):
    """A BOM is not part of the first column name; a cut-short .gz is a one-line error (#18.6), not a Java trace."""
    raw = tmp_path / "b.tsv"
    raw.write_bytes("\ufeffy\tt\tx\tc\n1\t5\t1\ta\n".encode())
    s = ingest({"raw": raw}, tmp_path / "out", _tiny_ds(raw, "tsv"), IngestConfig(), spark)
    assert s["rows_ok"] == 1
    data = gzip.compress(("y\tt\tx\tc\n" + "".join(f"{i % 2}\t{i}\t1\ta\n" for i in range(30000))).encode(), mtime=0)
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        ingest({"raw": cut}, tmp_path / "out2", _tiny_ds(cut, "tsv"), IngestConfig(), spark)
    assert str(e.value).startswith(f"{cut}: the gzip file is truncated or corrupt") and "\n" not in str(e.value)


def test_parquet_input_folder_typed_per_roles_bad_values_quarantined(spark, tmp_path):
    """#13.9: `format: parquet` passed validation but ingest refused it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"y": ["1", "0", "x"], "t": [10, 11, 12], "x": [1.5, None, 2.0], "c": ["a", None, "b"],
                             "tags": [["p", "q"], [], None]}), folder / "a.parquet")
    pq.write_table(pa.table({"y": ["1", "0"], "t": [13, 14], "x": [float("nan"), 3.0], "c": ["c", "d"],
                             "tags": [["r"], ["s", ""]]}), folder / "b.parquet")
    ds = _tiny_ds(folder, "parquet", roles={"multi_valued": ["tags"]})
    s = ingest({"raw": folder}, tmp_path / "out", ds, IngestConfig(max_quarantine_share=0.5), spark)
    rows = {r["t"]: r for r in spark.read.parquet(str(tmp_path / "out" / "data")).collect()}
    assert sorted(rows) == [10, 11, 14] and (s["rows_in"], s["rows_ok"], s["rows_quarantined"]) == (5, 3, 2)
    assert (rows[10]["y"], rows[10]["x"], rows[10]["c"], rows[10]["tags"]) == (1, 1.5, "a", ["p", "q"])
    assert (rows[11]["x"], rows[11]["c"], rows[11]["tags"]) == (None, None, []) and rows[14]["tags"] == ["s"]
    q = {(Path(r["file"]).name, r["line"]): r["reason"] for r in spark.read.parquet(str(tmp_path / "out" / "quarantine")).collect()}
    assert q == {("a.parquet", 3): "non_numeric:y", ("b.parquet", 1): "not_finite:x"}


def test_line_numbers_need_no_python_rows_or_join(spark, tmp_path):
    """The per-block line offsets are literals in the plan: no DataFrame built from Python rows (which
    starts a Python worker on every read) and no broadcast join; the numbers stay exact over several blocks."""
    from features.readers import numbered_lines

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write(a, "".join(f"r{i}\n" for i in range(1, 301)))
    _write(b, "h\nx\n")
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "400")  # several blocks for a.csv
    try:
        lines, facts = numbered_lines(spark, [a, b])
        plan = lines._jdf.queryExecution().executedPlan().toString()
        got = {(Path(r["file"]).name, r["line"]): r["raw"] for r in lines.collect()}
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    assert "Broadcast" not in plan and "ExistingRDD" not in plan and "Python" not in plan, plan
    assert [f.lines for f in facts] == [300, 2]
    assert got == {**{("a.csv", i): f"r{i}" for i in range(1, 301)}, ("b.csv", 1): "h", ("b.csv", 2): "x"}

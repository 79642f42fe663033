"""Reading public sequence data as shipped: sequence lines, event logs, attribute maps and tables, bad rows quarantined."""

from __future__ import annotations

import gzip
import json

import pytest

from features.errors import DataError
from pipelines.sessions.sources import read_item_attributes, read_sequences, reasons


def test_sequence_lines_gzipped_with_bad_lines_quarantined(tmp_path):
    path = tmp_path / "seq.txt.gz"
    path.write_bytes(gzip.compress(b"u1 a b c d\nu2\tb c e\n\nu3\nu1 x y z\nu4 a c\xff\nu5 c d\n"))
    src = read_sequences(path)
    assert src.kind == "sequence_lines" and src.rows_in == 7 and src.rows_ok == 3
    assert [(s.session_id, s.user_id, s.items, s.timestamps) for s in src.sequences] == [
        ("u1", "u1", ["a", "b", "c", "d"], None), ("u2", "u2", ["b", "c", "e"], None), ("u5", "u5", ["c", "d"], None)]
    assert [(q["line"], q["reason"]) for q in src.quarantine] == [
        (3, "empty_line"), (4, "no_items"), (5, "duplicate_session:first at line 1"), (6, "invalid_utf8")]
    assert src.quarantine[2]["raw"] == "u1 x y z" and src.quarantine[2]["file"] == str(path)
    assert reasons(src.quarantine) == {"duplicate_session": 1, "empty_line": 1, "invalid_utf8": 1, "no_items": 1}


def test_event_log_orders_by_time_keeping_file_order_for_ties(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("session_id,item_id,timestamp\n"
                    "s1,b,20\ns1,a,10\ns2,x,5\ns1,c,20\n"         # s1: a (10), then b and c share 20: file order
                    "s2,y\n"                                      # wrong column count
                    "s2,,7\n"                                     # no item
                    "s2,z,soon\n"                                 # time not a number
                    "s2,w,1970-01-01T00:00:09\n")                 # ISO time: 9 s
    src = read_sequences(path)
    assert src.kind == "event_log" and src.has_time and src.rows_in == 8 and src.rows_ok == 5
    assert src.columns == {"session": "session_id", "item": "item_id", "time": "timestamp", "user": None}
    assert [(s.session_id, s.user_id, s.items, s.timestamps) for s in src.sequences] == [
        ("s1", None, ["a", "b", "c"], [10, 20, 20]), ("s2", None, ["x", "w"], [5, 9])]
    assert [(q["line"], q["reason"]) for q in src.quarantine] == [
        (6, "wrong_column_count:expected 3, got 2"), (7, "missing_value:item_id"), (8, "non_numeric:timestamp")]


def test_recbole_inter_header_and_named_columns(tmp_path):
    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t3\n1\t11\t4\t2\n2\t10\t3\t1\n")
    src = read_sequences(path)
    assert [(s.session_id, s.user_id, s.items) for s in src.sequences] == [("1", "1", ["11", "10"]), ("2", "2", ["10"])]
    other = tmp_path / "clicks.csv"
    other.write_text("visit,product,when\nv1,p2,2\nv1,p1,1\n")
    src = read_sequences(other, session_column="visit", item_column="product", time_column="when")
    assert [(s.session_id, s.items) for s in src.sequences] == [("v1", ["p1", "p2"])]
    with pytest.raises(DataError, match=r"clicks.csv: --item-column 'sku' is not a column \(the header has visit, product, when\)"):
        read_sequences(other, session_column="visit", item_column="sku")
    with pytest.raises(DataError, match="no item column .*--item-column"):
        read_sequences(other, session_column="visit")


def test_attribute_map_quarantines_entries_that_are_not_lists(tmp_path):
    path = tmp_path / "item2attributes.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"a": [1, 2], "b": 3, "c": None, "d": {"x": 1}, "e": [[1]]}).encode()))
    src = read_item_attributes(path)
    assert src.multi_valued == ["attributes"] and src.categorical == [] and src.rows_in == 5
    assert src.table.to_dict("list") == {"item_id": ["a", "b", "c"], "attributes": [["1", "2"], ["3"], []]}
    assert [(q["line"], q["reason"], q["raw"]) for q in src.quarantine] == [
        (4, "not_a_list_of_ids", '{"d": {"x": 1}}'), (5, "not_a_list_of_ids", '{"e": [[1]]}')]
    bad = tmp_path / "broken.json"
    bad.write_text('{"a": [1,')
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        read_item_attributes(bad)


def test_attribute_table_detects_multi_valued_columns(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand,categories\na,acme,toys|games\nb,,toys\nb,other,x\nc,zeta\n")
    src = read_item_attributes(path)
    assert src.categorical == ["brand"] and src.multi_valued == ["categories"] and src.rows_in == 4
    assert src.table.to_dict("list") == {"item_id": ["a", "b"], "brand": ["acme", None],
                                         "categories": [["toys", "games"], ["toys"]]}
    assert [(q["line"], q["reason"]) for q in src.quarantine] == [
        (4, "duplicate_item:first at line 3"), (5, "wrong_column_count:expected 3, got 2")]
    named = read_item_attributes(path, categorical=["categories"])
    assert named.categorical == ["categories"] and named.table["categories"].tolist() == ["toys|games", "toys"]
    with pytest.raises(DataError, match=r"items.csv: column 'price' is missing \(the file has item_id, brand, categories\)"):
        read_item_attributes(path, categorical=["price"])

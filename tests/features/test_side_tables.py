"""Side tables (`dataset.tables`) joined in ingest: typed per roles, bad rows and repeated keys quarantined,
unmatched keys counted, flag columns turned into a multi-valued column; MovieLens 100K end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.config import ColumnRoles, DatasetConfig, IngestConfig, SideTableConfig
from features.errors import DataError
from features.ingest import ingest

pytestmark = pytest.mark.spark


def _files(tmp_path: Path) -> DatasetConfig:
    (tmp_path / "main.csv").write_text("u|i|y|t\n1|10|1|100\n2|10|0|101\n3|11|1|102\n1|12|0|103\n")
    (tmp_path / "users.csv").write_text("u|age|sex|extra\n1|20|M|x\n2|bad|F|y\n1|30|F|dup\n")
    (tmp_path / "items.tsv").write_text("i\ttitle\tA\tB\n10\tx\t1\t0\n11\ty\t1\t1\n")
    return DatasetConfig(
        path=tmp_path / "main.csv", format="csv", delimiter="|", kind="ctr",
        roles=ColumnRoles(label="y", timestamp="t", categorical=["u", "i", "sex"], dense=["age"], multi_valued=["genres"]),
        tables=[SideTableConfig(name="users", path=tmp_path / "users.csv", delimiter="|", key="u"),
                SideTableConfig(name="items", path=tmp_path / "items.tsv", format="tsv", key="i", flags={"genres": ["A", "B"]})])


def test_side_tables_joined_quarantined_and_unmatched_counted(spark, tmp_path):
    """#13.7: a CTR dataset had to be one flat file."""
    ds = _files(tmp_path)
    s = ingest({"raw": ds.path}, tmp_path / "out", ds, IngestConfig(max_quarantine_share=0.7), spark)
    data = spark.read.parquet(str(tmp_path / "out" / "data"))
    assert data.columns == ["u", "i", "y", "t", "age", "sex", "genres"]
    got = {r["t"]: (r["age"], r["sex"], r["genres"]) for r in data.collect()}
    assert got == {100: (20.0, "M", ["A"]), 101: (None, None, ["A"]), 102: (None, None, ["A", "B"]), 103: (20.0, "M", None)}
    assert (s["rows_in"], s["rows_ok"], s["rows_quarantined"]) == (4, 4, 0)
    users, items = s["tables"]["users"], s["tables"]["items"]
    assert (users["rows_in"], users["rows_ok"], users["rows_quarantined"]) == (3, 1, 2)
    assert (users["unmatched_rows"], users["unmatched_keys"], users["missing_key_rows"]) == (2, 2, 0)
    assert (items["rows_in"], items["rows_ok"], items["unmatched_rows"]) == (2, 2, 1)
    q = spark.read.parquet(str(tmp_path / "out" / "quarantine_users")).collect()
    assert sorted((Path(r["file"]).name, r["line"], r["reason"], r["raw"]) for r in q) == [
        ("users.csv", 3, "non_numeric:age", "2|bad|F|y"), ("users.csv", 4, "duplicate_key:u=1", "1|30|F|dup")]
    # a side table's bad rows count against the same share as the main file's
    with pytest.raises(DataError, match=r"users.csv: 2 of 3 rows .* commonest: "):
        ingest({"raw": ds.path}, tmp_path / "out2", ds, IngestConfig(), spark)


def test_missing_key_column_is_a_one_line_error(tmp_path):
    from features.side_tables import split_specs, table_columns
    from features.ingest import dataset_column_specs

    ds = _files(tmp_path)
    ds.tables[0].key = "user"
    with pytest.raises(DataError, match=r"users.csv: column 'user' \(dataset.tables 'users'\) is not in the table's columns"):
        split_specs(ds, dataset_column_specs(ds), {t.name: table_columns(t) for t in ds.tables})


def test_movielens_config_joins_users_and_items_with_genres(spark, tmp_path):
    from jobs.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "movielens.yaml")
    ds = cfg.dataset
    s = ingest({"raw": ds.path}, tmp_path / "out", ds, IngestConfig(), spark)
    assert (s["rows_in"], s["rows_ok"]) == (100_000, 100_000)
    assert {k: (v["rows_ok"], v["unmatched_rows"]) for k, v in s["tables"].items()} == {"users": (943, 0), "items": (1682, 0)}
    data = spark.read.parquet(str(tmp_path / "out" / "data"))
    toy = data.where("item = '1'").select("genres", "releaseDate").first()
    assert toy["genres"] == ["Animation", "Children's", "Comedy"] and toy["releaseDate"] == "01-Jan-1995"
    u1 = data.where("user = '1'").select("age", "gender", "occupation").first()
    assert (u1["age"], u1["gender"], u1["occupation"]) == (24.0, "M", "technician")
    assert data.where("rating = 1").count() == 55_375  # ratings 4 and 5


def test_invalid_utf8_counts_only_in_the_columns_a_side_table_brings(spark, tmp_path):
    """MovieLens' u.item is Latin-1 in its titles; the titles are not brought, so no item is lost."""
    ds = _files(tmp_path)
    (tmp_path / "items.tsv").write_bytes(b"i\ttitle\tA\tB\n10\tMis\xe9rables\t1\t0\n11\ty\t1\t1\n")
    ds.tables[0] = SideTableConfig(name="users", path=tmp_path / "users.csv", delimiter="|", key="u")
    (tmp_path / "users.csv").write_bytes(b"u|age|sex\n1|20|M\xe9\n2|30|F\n3|40|M\n")
    s = ingest({"raw": ds.path}, tmp_path / "out", ds, IngestConfig(max_quarantine_share=0.5), spark)
    assert s["tables"]["items"]["rows_ok"] == 2 and s["tables"]["users"]["quarantine_reasons"] == {"invalid_utf8": 1}

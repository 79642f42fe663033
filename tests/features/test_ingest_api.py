"""`features.ingest`'s public API for other stages (predict): a run's ingest rules applied to new rows,
bad rows quarantined with their reasons and the counts reconciled."""

from __future__ import annotations

import pytest

from features.config import ColumnRoles, DatasetConfig
from features.ingest import IngestCounts, quarantine_and_count, read_rows

pytestmark = pytest.mark.spark


def test_read_rows_applies_the_ingest_rules_and_the_counts_reconcile(spark, tmp_path):
    from pyspark.sql import functions as F

    raw = tmp_path / "day.tsv"
    raw.write_text("label\tts\tI1\tC1\n1\t10\t2.5\ta\n0\t11\tx\tb\n\n1\t12\t\t\n2\t13\t1\tc\n0\t14\t1\n")
    ds = DatasetConfig(path=raw, format="tsv", kind="ctr",
                       roles=ColumnRoles(label="label", timestamp="ts", dense=["I1"], categorical=["C1"]))
    rows = read_rows(spark, raw, ds)
    assert rows.columns == ["label", "ts", "I1", "C1"] and rows.rows_in == 6
    good = rows.df.where(F.col("reason").isNull()).select("line", "label", "I1", "C1").orderBy("line")
    good.write.parquet(str(tmp_path / "data"))
    got = [tuple(r) for r in good.collect()]
    assert got == [(2, 1, 2.5, "a"), (5, 1, None, None)]   # a missing value is kept as null, as in ingest
    counts = quarantine_and_count(spark, str(raw), rows.rows_in, rows.df.where(F.col("reason").isNotNull()),
                                  tmp_path / "data", tmp_path / "quarantine")
    assert counts == IngestCounts(6, 2, 4, {"non_numeric": 1, "empty_line": 1, "label_not_binary": 1,
                                            "wrong_column_count": 1})
    q = spark.read.parquet(str(tmp_path / "quarantine")).orderBy("line").collect()
    assert [r["line"] for r in q] == [3, 4, 6, 7] and q[0]["raw"] == "0\t11\tx\tb"

"""Ingest stage: raw delimited text (plain or .gz) to typed Parquet, with every bad line quarantined.

Writes `data/` (typed columns, range-partitioned and sorted by timestamp when there is one),
`quarantine/` (`file`, `line`, `raw`, `reason`) and, for session data, `items/` (the item table,
multi-valued columns as array<string>). `rows_in == rows_ok + rows_quarantined` is checked.
Only aggregates reach the driver.

Example::

    summary = ingest({"raw": Path("data/ctr/train.tsv")}, Path("out"), dataset,
                     IngestConfig(), spark)
    summary["rows_in"] == summary["rows_ok"] + summary["rows_quarantined"]
    # -> True
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from features.config import DatasetConfig, IngestConfig, ItemTableConfig
from features.errors import DataError
from features.readers import ARRAY, DOUBLE, LABEL, STRING, TIMESTAMP, ColumnSpec
from features.table_read import (check_balance, check_share, quarantine_reasons, read_table,
                                 write_quarantine)

STAGED = "_parsed"  # the parsed rows, written once during the stage and removed at its end


def dataset_column_specs(dataset: DatasetConfig) -> dict[str, tuple[str, ColumnSpec]]:
    """Role column -> (role path in the config, expected type). Rows need their label / ids / timestamp."""
    r = dataset.roles
    specs: dict[str, tuple[str, ColumnSpec]] = {}
    for c in r.dense:
        specs[c] = ("roles.dense", ColumnSpec(DOUBLE))
    for c in r.categorical:
        specs[c] = ("roles.categorical", ColumnSpec(STRING))
    for c in r.multi_valued:
        specs[c] = ("roles.multi_valued", ColumnSpec(ARRAY, separator=r.separator))
    required = {"ctr": {"label", "timestamp"}, "sessions": {"item_id", "timestamp", "session_id"},
                "interactions": {"user_id", "item_id", "timestamp"}}[dataset.kind]
    for role in ("session_id", "user_id", "item_id"):
        col = getattr(r, role)
        if col is not None:
            specs[col] = (f"roles.{role}", ColumnSpec(STRING, required=role in required))
    if r.timestamp is not None:
        specs[r.timestamp] = ("roles.timestamp", ColumnSpec(TIMESTAMP, required=True))
    if r.label is not None:
        specs[r.label] = ("roles.label", label_spec(dataset))
    return specs


def label_spec(dataset: DatasetConfig) -> ColumnSpec:
    """How the label column is read: 0/1, `value >= roles.label_threshold`, or `value in roles.label_positive`."""
    r = dataset.roles
    return ColumnSpec(LABEL, required=True, threshold=r.label_threshold, positive=r.positive_values())


def item_column_specs(items: ItemTableConfig) -> dict[str, tuple[str, ColumnSpec]]:
    """Item-table column -> (config key, expected type)."""
    specs: dict[str, tuple[str, ColumnSpec]] = {c: ("items.categorical", ColumnSpec(STRING)) for c in items.categorical}
    for c in items.multi_valued:
        specs[c] = ("items.multi_valued", ColumnSpec(ARRAY, separator=items.separator))
    specs[items.item_id] = ("items.item_id", ColumnSpec(STRING, required=True))
    return specs


class ParsedRows(NamedTuple):
    """Rows read through the ingest rules: a Spark frame of `file`, `line`, the typed columns and
    `reason` (null for a good row, else why it is quarantined), the file's columns, data rows read."""

    df: Any
    columns: list[str]
    rows_in: int


@dataclass
class IngestCounts:
    """What a read through the ingest rules took in, kept and quarantined (by reason kind); they reconcile."""

    rows_in: int
    rows_ok: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)


def read_rows(spark, path: Path, dataset: DatasetConfig, specs: dict[str, tuple[str, ColumnSpec]] | None = None,
              where: str = "dataset") -> ParsedRows:
    """Parse the file(s) at `path` in `dataset`'s format with its ingest rules (`specs`, default
    `dataset_column_specs(dataset)`): every line becomes a row, a bad one with its `reason`.

    Example::

        rows = read_rows(spark, Path("day2.tsv.gz"), run_config.dataset)
        rows.df.where("reason IS NULL").count() <= rows.rows_in
        # -> True
    """
    specs = dataset_column_specs(dataset) if specs is None else specs
    return ParsedRows(*read_table(spark, Path(path), dataset.format, dataset.delimiter, dataset.header,
                                   dataset.columns, specs, where))


def quarantine_and_count(spark, name: str, rows_in: int, bad, data: Path, quarantine: Path) -> IngestCounts:
    """Write the `bad` rows (a frame with `reason`) to `quarantine` (`file`, `line`, `raw`, `reason`), count
    the good rows already written to `data`, and check `rows_in == rows_ok + rows_quarantined`.

    Example::

        c = quarantine_and_count(spark, "day2.tsv", rows.rows_in, rows.df.where("reason IS NOT NULL"),
                                 out / "data", out / "quarantine")
        c.rows_in == c.rows_ok + c.rows_quarantined
        # -> True
    """
    write_quarantine(bad, quarantine)
    ok = spark.read.parquet(str(data)).count()
    reasons = quarantine_reasons(spark, quarantine)
    counts = IngestCounts(rows_in, ok, sum(reasons.values()), reasons)
    check_balance(name, rows_in, ok, counts.rows_quarantined)
    return counts


def _check_positive_labels(spark, data: Path, dataset: DatasetConfig) -> None:
    """With `roles.label_positive`, a run where no row matched it is a typo, not a dataset of negatives."""
    r = dataset.roles
    if r.label_positive is None or r.label is None:
        return
    from pyspark.sql import functions as F

    row = spark.read.parquet(str(data)).agg(F.sum(F.col(r.label)).alias("p"), F.count(F.lit(1)).alias("n")).first()
    if row["n"] and not row["p"]:
        raise DataError(f"{dataset.path}: no row's '{r.label}' is one of roles.label_positive {r.positive_values()}; "
                        "write the positive label value(s) as they appear in the file.")


def stage_parsed(spark, parsed, columns: list[str], folder: Path):
    """Write the parsed rows once to Parquet under `folder` and read them back: the typed columns,
    `file`, `line`, `reason`, and `raw` for the bad rows only (null for good ones, which never need it).

    The data pass (range sample and shuffle) and the quarantine pass then read columnar Parquet,
    the quarantine pass skipping the row groups without a bad row, instead of parsing the text
    again or holding every parsed line (raw text included) in an in-memory cache, which costs more
    to build than this write and spills once the data outgrows the driver's memory.

    Example::

        parsed = stage_parsed(spark, rows.df, rows.columns, out / "_parsed")
    """
    from pyspark.sql import functions as F

    bad = F.col("reason").isNotNull()
    (parsed.select("file", "line", F.when(bad, F.col("raw")).alias("raw"), "reason", *columns)
     .write.mode("overwrite").parquet(str(folder)))
    return spark.read.parquet(str(folder))


def ingest(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: IngestConfig, spark) -> dict:
    """Parse `inputs["raw"]` (and `inputs["items"]` for session data) into typed Parquet under `out`.

    Example (needs a SparkSession, so shown, not run; tests/features/test_ingest.py runs it)::

        s = ingest({"raw": Path("ml-100k/u.data")}, Path("out"), ds, IngestConfig(), spark)
        s["rows_ok"]        # 100000
    """
    from pyspark.sql import functions as F

    out = Path(out)
    raw_path = Path(inputs["raw"])
    specs = dataset_column_specs(dataset)
    tables: dict = {}
    if dataset.tables:  # side tables bring some role columns; the main file need not hold them
        from features.side_tables import count_unmatched, join_side_tables, split_specs, table_columns

        specs, per_table = split_specs(dataset, specs, {t.name: table_columns(t) for t in dataset.tables})
    parsed, columns, rows_in = read_rows(spark, raw_path, dataset, specs)
    ts = dataset.roles.timestamp
    order = ([ts] if ts else []) + ["file", "line"]
    parsed = stage_parsed(spark, parsed, columns, out / STAGED)  # parsed once; read by the data and quarantine passes
    good = parsed.where(F.col("reason").isNull())
    if dataset.tables:
        clash = [c for t in dataset.tables for c in [*per_table[t.name], *t.flags] if c != t.key and c in columns]
        if clash:
            raise DataError(f"{raw_path}: column '{clash[0]}' is in the main file and in a side table; rename one "
                            "(its header or columns list).")
        good, columns, tables = join_side_tables(spark, good, columns, dataset, per_table, inputs, out, cfg)
        count_unmatched(good, dataset, tables)
    (good.repartitionByRange(cfg.partitions, *order).sortWithinPartitions(*order)
     .select(*columns).write.mode("overwrite").parquet(str(out / "data")))
    counts = quarantine_and_count(spark, str(raw_path), rows_in, parsed.where(F.col("reason").isNotNull()),
                                  out / "data", out / "quarantine")
    shutil.rmtree(out / STAGED, ignore_errors=True)
    rows_ok, rows_bad, reasons = counts.rows_ok, counts.rows_quarantined, counts.reasons
    check_share(spark, raw_path, rows_in, rows_bad, out / "quarantine", cfg, dataset.roles.label)
    _check_positive_labels(spark, out / "data", dataset)
    summary = {"rows_in": rows_in, "rows_ok": rows_ok, "rows_quarantined": rows_bad, "rows_out": rows_ok,
               "quarantine_reasons": reasons, "columns": columns}
    if tables:
        summary["tables"] = tables

    items_path = inputs.get("items") or (dataset.items.path if dataset.items is not None else None)
    if dataset.items is not None and items_path is not None:
        summary.update(_ingest_items(spark, Path(items_path), dataset.items, out, cfg))
    return summary


def _ingest_items(spark, path: Path, items: ItemTableConfig, out: Path, cfg: IngestConfig) -> dict:
    """The item table to `out/items/`; malformed rows and repeated item ids go to `out/quarantine_items/`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    specs = item_column_specs(items)
    parsed, columns, rows_in = read_table(spark, path, items.format, items.delimiter, items.header, None,
                                           specs, "dataset.items")
    first = Window.partitionBy(items.item_id).orderBy("file", "line")
    parsed = parsed.withColumn(
        "reason", F.when(F.col("reason").isNull() & (F.row_number().over(first) > 1),
                         F.concat(F.lit(f"duplicate_item_id:{items.item_id}="), F.col(items.item_id)))
        .otherwise(F.col("reason")))
    (parsed.where(F.col("reason").isNull()).repartition(1).sortWithinPartitions("file", "line")
     .select(*columns).write.mode("overwrite").parquet(str(out / "items")))
    c = quarantine_and_count(spark, str(path), rows_in, parsed.where(F.col("reason").isNotNull()),
                             out / "items", out / "quarantine_items")
    ok, bad, reasons = c.rows_ok, c.rows_quarantined, c.reasons
    check_share(spark, path, rows_in, bad, out / "quarantine_items", cfg, where="dataset.items")
    return {"items_rows_in": rows_in, "items_rows_ok": ok, "items_rows_quarantined": bad,
            "items_quarantine_reasons": reasons}

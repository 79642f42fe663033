"""Ingest stage: raw delimited text (plain or .gz) to typed Parquet, with every bad line quarantined.

Writes `data/` (typed columns, range-partitioned and sorted by timestamp when there is one),
`quarantine/` (`file`, `line`, `raw`, `reason`) and, for session data, `items/` (the item table,
multi-valued columns as array<string>). `rows_in == rows_ok + rows_quarantined` is checked.
Only aggregates reach the driver.

Example:
    >>> summary = ingest({"raw": Path("data/ctr/train.tsv")}, Path("out"), dataset,   # doctest: +SKIP
    ...                  IngestConfig(), spark)
    >>> summary["rows_in"] == summary["rows_ok"] + summary["rows_quarantined"]        # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from features.config import DatasetConfig, IngestConfig, ItemTableConfig
from features.errors import DataError
from features.readers import (ARRAY, DOUBLE, LABEL, STRING, TIMESTAMP, ColumnSpec, TextLayout, assemble_records,
                              has_quote, list_files, numbered_lines, parquet_texts, parse_lines, type_fields)

QUARANTINE_COLUMNS = ["file", "line", "raw", "reason"]


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


def _columns_of(facts, headers: list[list[str]], header: bool, declared: list[str] | None, specs,
                where: str) -> list[str]:
    """The file's column names (from the header or the config); every role column must be there."""
    if header:
        columns = headers[0]
        for f, h in zip(facts[1:], headers[1:]):
            if h != columns:
                raise DataError(f"{f.path}: header differs from {facts[0].path}; all files of a dataset need the same columns.")
    else:
        columns = list(declared or [])
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DataError(f"{facts[0].path}: column '{dup}' appears twice in the {'header' if header else f'{where}.columns list'}; rename one.")
    for col, (key, _) in specs.items():
        if col not in columns:
            src = "header" if header else f"'{where}.columns' list"
            raise DataError(f"{facts[0].path}: column '{col}' ({where}.{key}) is not in the file's {src} "
                            f"({', '.join(columns[:12])}{', ...' if len(columns) > 12 else ''}); "
                            f"fix {where}.{key} or the {src}.")
    return columns


def _read_table(spark, path: Path, fmt: str, delimiter: str | None, header: bool, declared: list[str] | None,
                specs: dict[str, tuple[str, ColumnSpec]], where: str, utf8_in_specs_only: bool = False):
    """Parse every line of the file(s) at `path`; returns (parsed_df, columns, data rows in)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if fmt == "parquet":
        return _read_parquet(spark, path, specs, where)
    layout = TextLayout.for_format(fmt, delimiter)
    files = list_files(path)
    records = layout.quoted and any(has_quote(f) for f in files)  # else the split-line fast path
    lines, facts = numbered_lines(spark, files)
    headers = [f.header_fields(layout) for f in facts]
    columns = _columns_of(facts, headers, header, declared, specs, where)
    if records:
        lines = assemble_records(lines)
    if header:
        lines = lines.where(F.col("line") > 1)
    if records:
        lines = lines.persist(StorageLevel.MEMORY_AND_DISK)
        rows_in = lines.count()
    else:
        rows_in = sum(f.lines - (1 if header else 0) for f in facts)
    if rows_in == 0:
        raise DataError(f"{facts[0].path}: the file has a header but no data rows; check {where}.path.")
    parsed = parse_lines(lines, columns, {c: s for c, (_, s) in specs.items()}, layout, records=records,
                         utf8_in_specs_only=utf8_in_specs_only).df
    return parsed, columns, rows_in


def _read_parquet(spark, path: Path, specs: dict[str, tuple[str, ColumnSpec]], where: str):
    """A Parquet file or folder, typed per roles by the same rules as text (a bad value quarantines its
    row: `line` is the row number in its file, `raw` the row as JSON); returns (parsed_df, columns, rows in)."""
    from pyspark.sql.types import ArrayType

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; fix {where}.path.")
    try:
        df = spark.read.parquet(str(path))
    except Exception as err:  # AnalysisException: not Parquet, or no files
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot be read as Parquet ({first}); point {where}.path at a Parquet file or "
                        f"folder, or set {where}.format to csv/tsv.") from None
    columns = list(df.columns)
    for col, (key, _) in specs.items():
        if col not in columns:
            raise DataError(f"{path}: column '{col}' ({where}.{key}) is not in the Parquet schema "
                            f"({', '.join(columns[:12])}{', ...' if len(columns) > 12 else ''}); fix {where}.{key}.")
    arrays = {c for c in columns if isinstance(df.schema[c].dataType, ArrayType)}
    parsed = type_fields(parquet_texts(df, columns, arrays), columns, {c: s for c, (_, s) in specs.items()}, arrays)
    rows_in = df.count()
    if rows_in == 0:
        raise DataError(f"{path}: the Parquet data has no rows; check {where}.path.")
    return parsed, columns, rows_in


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

    Example:
        >>> rows = read_rows(spark, Path("day2.tsv.gz"), run_config.dataset)   # doctest: +SKIP
        >>> rows.df.where("reason IS NULL").count() <= rows.rows_in               # doctest: +SKIP
        True
    """
    specs = dataset_column_specs(dataset) if specs is None else specs
    return ParsedRows(*_read_table(spark, Path(path), dataset.format, dataset.delimiter, dataset.header,
                                   dataset.columns, specs, where))


def quarantine_and_count(spark, name: str, rows_in: int, bad, data: Path, quarantine: Path) -> IngestCounts:
    """Write the `bad` rows (a frame with `reason`) to `quarantine` (`file`, `line`, `raw`, `reason`), count
    the good rows already written to `data`, and check `rows_in == rows_ok + rows_quarantined`.

    Example:
        >>> c = quarantine_and_count(spark, "day2.tsv", rows.rows_in, rows.df.where("reason IS NOT NULL"),
        ...                          out / "data", out / "quarantine")              # doctest: +SKIP
        >>> c.rows_in == c.rows_ok + c.rows_quarantined                              # doctest: +SKIP
        True
    """
    _write_quarantine(bad, quarantine)
    ok = spark.read.parquet(str(data)).count()
    reasons = _reasons(spark, quarantine)
    counts = IngestCounts(rows_in, ok, sum(reasons.values()), reasons)
    _check_balance(name, rows_in, ok, counts.rows_quarantined)
    return counts


def _write_quarantine(bad, out: Path) -> None:
    bad.select(*QUARANTINE_COLUMNS).repartition(1).sortWithinPartitions("file", "line").write.mode("overwrite").parquet(str(out))


def _reasons(spark, qpath: Path) -> dict[str, int]:
    from pyspark.sql import functions as F

    q = spark.read.parquet(str(qpath))
    kind = F.split("reason", ":").getItem(0)
    return {r["k"]: int(r["n"]) for r in q.groupBy(kind.alias("k")).agg(F.count(F.lit(1)).alias("n")).collect()}


def _check_balance(name: str, rows_in: int, ok: int, bad: int) -> None:
    if rows_in != ok + bad:
        raise RuntimeError(f"{name}: rows_in {rows_in} != rows_ok {ok} + rows_quarantined {bad}; a row was lost")


def _check_share(spark, path: Path, rows_in: int, bad: int, qpath: Path, cfg: IngestConfig,
                 label: str | None = None, where: str = "dataset") -> None:
    """A `DataError` when more than `max_quarantine_share` of the rows are bad: it names the commonest
    reason and its column, shows an example line and says what to change."""
    share = bad / rows_in
    if share <= cfg.max_quarantine_share:
        return
    from pyspark.sql import functions as F

    q = spark.read.parquet(str(qpath))
    top = q.groupBy("reason").agg(F.count(F.lit(1)).alias("n"), F.min_by(F.struct("file", "line", "raw"), "line")
                                  .alias("e")).orderBy(F.col("n").desc(), "reason").first()
    kind, _, col = top["reason"].partition(":")
    what = f"{kind} in column '{col}'" if col and kind not in ("wrong_column_count",) else top["reason"]
    raw = top["e"]["raw"]
    example = f"{Path(top['e']['file']).name} line {top['e']['line']}: {raw[:120]!r}{'...' if len(raw) > 120 else ''}"
    if col == label and kind in ("non_numeric", "label_not_binary"):
        fix = (f"for a label that is not 0/1 set {where}.roles.label_positive to the value(s) meaning 1 "
               "(or roles.label_threshold for a number)")
    elif kind == "wrong_column_count":
        fix = f"check {where}.format and {where}.delimiter (and that quoted fields are closed)"
    elif kind in ("non_numeric", "not_finite") and col:
        fix = f"list '{col}' under roles.categorical if it is not a number, or fix the file"
    else:
        fix = "fix the file or the column roles"
    raise DataError(f"{path}: {bad} of {rows_in} rows ({share:.2%}) are malformed, above "
                    f"features.ingest.max_quarantine_share={cfg.max_quarantine_share}; commonest: {what} "
                    f"({top['n']} rows), e.g. {example}; {fix}, or raise that setting.")


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


def ingest(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: IngestConfig, spark) -> dict:
    """Parse `inputs["raw"]` (and `inputs["items"]` for session data) into typed Parquet under `out`.

    Example (needs a SparkSession, so shown, not run; tests/features/test_ingest.py runs it)::

        s = ingest({"raw": Path("ml-100k/u.data")}, Path("out"), ds, IngestConfig(), spark)
        s["rows_ok"]        # 100000
    """
    from pyspark import StorageLevel
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
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)  # read by the data, quarantine and range-sample passes
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
    parsed.unpersist()
    rows_ok, rows_bad, reasons = counts.rows_ok, counts.rows_quarantined, counts.reasons
    _check_share(spark, raw_path, rows_in, rows_bad, out / "quarantine", cfg, dataset.roles.label)
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
    parsed, columns, rows_in = _read_table(spark, path, items.format, items.delimiter, items.header, None,
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
    _check_share(spark, path, rows_in, bad, out / "quarantine_items", cfg, where="dataset.items")
    return {"items_rows_in": rows_in, "items_rows_ok": ok, "items_rows_quarantined": bad,
            "items_quarantine_reasons": reasons}

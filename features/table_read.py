"""Reading one table by the ingest rules, and quarantining its bad rows: shared by the main file and side tables.

`read_table` parses a delimited text file or folder (plain or .gz; RFC 4180 quotes when the file has
any) or Parquet into typed columns plus a `reason` per row (null when good); `write_quarantine`,
`quarantine_reasons`, `check_balance` and `check_share` keep the bad rows and check the counts.
`features.ingest` (the main file, the item table) and `features.side_tables` both use them, so
neither imports the other's helpers.

Example:
    >>> check_balance("t.csv", rows_in=10, ok=9, bad=1)        # the counts reconcile: nothing raised
    >>> QUARANTINE_COLUMNS
    ['file', 'line', 'raw', 'reason']
"""

from __future__ import annotations

from pathlib import Path

from features.config import IngestConfig
from features.errors import DataError
from features.readers import (ColumnSpec, TextLayout, assemble_records, has_quote, list_files, numbered_lines,
                              parquet_texts, parse_lines, type_fields)

QUARANTINE_COLUMNS = ["file", "line", "raw", "reason"]


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


def read_table(spark, path: Path, fmt: str, delimiter: str | None, header: bool, declared: list[str] | None,
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


def write_quarantine(bad, out: Path) -> None:
    bad.select(*QUARANTINE_COLUMNS).repartition(1).sortWithinPartitions("file", "line").write.mode("overwrite").parquet(str(out))


def quarantine_reasons(spark, qpath: Path) -> dict[str, int]:
    from pyspark.sql import functions as F

    q = spark.read.parquet(str(qpath))
    kind = F.split("reason", ":").getItem(0)
    return {r["k"]: int(r["n"]) for r in q.groupBy(kind.alias("k")).agg(F.count(F.lit(1)).alias("n")).collect()}


def check_balance(name: str, rows_in: int, ok: int, bad: int) -> None:
    if rows_in != ok + bad:
        raise RuntimeError(f"{name}: rows_in {rows_in} != rows_ok {ok} + rows_quarantined {bad}; a row was lost")


def check_share(spark, path: Path, rows_in: int, bad: int, qpath: Path, cfg: IngestConfig,
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

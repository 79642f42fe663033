"""New raw rows through the run's own ingest rules: typed Parquet to score, and a quarantine.

The parsing and the reasons are the ingest stage's (`features.ingest`, Spark): the same column
roles, types and checks, so a line the ingest stage would have quarantined is quarantined here
too, with the same `reason`. Differences, because scoring needs no label: the label column may be
absent from the file (then there are no metrics), and `label` names another label column.

Writes `parsed/` (good rows: `file`, `line`, then the columns scoring and slicing need, sorted by
file and line) and `quarantine/` (`file`, `line`, `raw`, `reason`); checks
`rows_in == rows_ok + rows_quarantined`.

Example::

    got = parse_input(spark, Path("new_day.tsv.gz"), dataset, Path("/tmp/p"), keep=["I1", "C1"])
    got.counts.rows_in == got.counts.rows_ok + got.counts.rows_quarantined
    # -> True
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

from features.config import DatasetConfig
from features.errors import DataError
from features.ingest import IngestCounts, dataset_column_specs, label_spec, quarantine_and_count, read_rows
from features.readers import TextLayout, list_files

KEY = ["file", "line"]


@dataclass
class ParsedInput:
    """Where the parsed rows and the quarantine are, and the counts that reconcile."""

    parsed: Path
    quarantine: Path
    counts: IngestCounts      # rows_in, rows_ok, rows_quarantined, reasons
    label: str | None = None  # the label column, when the input has one
    columns: list[str] = field(default_factory=list)


def header_columns(path: Path, dataset: DatasetConfig) -> list[str]:
    """The input's column names: its first line (plain or .gz), `dataset.columns` without a header, or the
    Parquet schema."""
    if dataset.format == "parquet":
        import pyarrow.dataset as pads

        try:
            return list(pads.dataset(str(path), format="parquet").schema.names)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot be read as Parquet ({err}); give --input in the run's format.") from None
    if not dataset.header:
        return list(dataset.columns or [])
    first = list_files(path)[0]
    opener = gzip.open if first.name.endswith(".gz") else open
    try:
        with opener(first, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            line = fh.readline().rstrip("\r\n")
    except OSError as err:
        raise DataError(f"{first}: cannot be read ({err.strerror or err}); check --input.") from None
    layout = TextLayout.for_format(dataset.format, dataset.delimiter)
    return [n.strip() or f"_c{i}" for i, n in enumerate(layout.split_python(line))]


def input_specs(dataset: DatasetConfig, columns: list[str], label: str | None) -> tuple[dict, str | None]:
    """The ingest column specs for this input, and its label column (None when it has none).

    `label` (e.g. `--label clicked`) must be in the input; without it, the dataset's label role is
    used when the input has that column."""
    specs = dict(dataset_column_specs(dataset))
    role = dataset.roles.label
    specs.pop(role, None)
    rule = label_spec(dataset)  # the ingest stage's label rule: 0/1, threshold or positive values
    if label is not None and label not in columns:
        raise DataError(f"--label {label}: no such column in the input ({', '.join(columns[:12])}); "
                        "name the input's label column or leave --label out.")
    chosen = label or (role if role in columns else None)
    if chosen is not None:
        specs[chosen] = ("roles.label", rule)
    return specs, chosen


def parse_input(spark, path: Path, dataset: DatasetConfig, out: Path, keep: list[str],
                label: str | None = None) -> ParsedInput:
    """Parse `path` with the ingest rules into `out/parsed` and `out/quarantine` (see module doc)."""
    from pyspark.sql import functions as F

    out = Path(out)
    columns = header_columns(path, dataset)
    specs, label_col = input_specs(dataset, columns, label)
    parsed, columns, rows_in = read_rows(spark, Path(path), dataset, specs)
    missing = [c for c in keep if c not in columns]
    if missing:
        raise DataError(f"{path}: column '{missing[0]}', which the model reads, is not in the input "
                        f"({', '.join(columns[:12])}); give rows with the run's columns.")
    wanted = [*KEY, *dict.fromkeys([*keep, *([label_col] if label_col else [])])]
    parsed = parsed.cache()
    (parsed.where(F.col("reason").isNull()).select(*wanted).orderBy(*KEY)
     .write.mode("overwrite").parquet(str(out / "parsed")))
    c = quarantine_and_count(spark, str(path), rows_in, parsed.where(F.col("reason").isNotNull()),
                             out / "parsed", out / "quarantine")
    parsed.unpersist()
    return ParsedInput(out / "parsed", out / "quarantine", c, label_col, columns)

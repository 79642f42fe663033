"""Delimited text files read line by line in Spark: real line numbers, typed columns, a reason per bad line.

Every line of every file becomes one row `(file, line, raw)` where `line` is the 1-based line number
in its file (the header, when there is one, is line 1). `parse_lines` then splits each line, checks
it against the expected layout and types its fields; a line that does not fit gets a `reason`
(`empty_line`, `invalid_utf8`, `wrong_column_count:...`, `non_numeric:<col>`, ...) instead of being
dropped, so the caller can send it to quarantine.

Line numbers come from Spark's file metadata (`_metadata.file_path`, `_metadata.file_block_start`)
and `monotonically_increasing_id`: rows of one file block are consecutive ids, and the blocks of a
file are ordered by their byte offset, so one small aggregate (a row per block, collected to the
driver) turns ids into line numbers however Spark splits or packs the files.

Example:
    >>> layout = TextLayout(delimiter="\\t", quoted=False)                       # doctest: +SKIP
    >>> lines, files = numbered_lines(spark, [Path("train.tsv.gz")])            # doctest: +SKIP
    >>> header = files[0].header_fields(layout)                                 # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from features.errors import DataError

# column kinds understood by `parse_lines`
STRING, DOUBLE, LABEL, TIMESTAMP, ARRAY = "string", "double", "label", "timestamp", "array"
REPLACEMENT_CHAR = "\ufffd"  # what Spark's UTF-8 decoder puts where the bytes are not valid UTF-8


@dataclass(frozen=True)
class TextLayout:
    """How fields are written: the delimiter, and whether fields may be double-quoted (CSV)."""

    delimiter: str
    quoted: bool = False

    @classmethod
    def for_format(cls, fmt: str, delimiter: str | None = None) -> "TextLayout":
        """Layout of a `csv` / `tsv` file, with an optional delimiter override (e.g. '|')."""
        if fmt == "parquet":
            raise DataError("format 'parquet' is not a text format; ingest reads csv/tsv text files "
                            "(set dataset.format to csv or tsv).")
        default = "\t" if fmt == "tsv" else ","
        return cls(delimiter=delimiter or default, quoted=fmt == "csv")

    def split_pattern(self) -> str:
        """Java regex that splits a line into fields (outside double quotes for CSV)."""
        sep = re.escape(self.delimiter)
        return f'{sep}(?=(?:[^"]*"[^"]*")*[^"]*$)' if self.quoted else sep

    def split_python(self, line: str) -> list[str]:
        """The same split in Python, for the header line only."""
        parts = re.split(self.split_pattern(), line)
        return [_unquote_py(p) for p in parts] if self.quoted else parts


def _unquote_py(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1].replace('""', '"')
    return s


@dataclass
class FileLines:
    """What one aggregate pass learnt about a file: its line count and its first line."""

    path: str
    lines: int
    first_line: str | None = None

    def header_fields(self, layout: TextLayout) -> list[str]:
        """Column names from the first line; blank names become `_c<i>`."""
        if self.first_line is None:
            return []
        names = [n.strip() for n in layout.split_python(self.first_line)]
        return [n if n else f"_c{i}" for i, n in enumerate(names)]


def list_files(path: Path) -> list[Path]:
    """The data files of `path`: the file itself, or the visible files of a folder, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"{path}: the folder holds no data files; point dataset.path at a file or a folder of files.")
        return files
    raise DataError(f"{path}: no such file or folder; fix dataset.path.")


def _display_path(uri: str) -> str:
    """A file URI as Spark reports it (`file:/tmp/a%20b.tsv`) as a plain path for local files."""
    from urllib.parse import unquote

    return unquote(uri[len("file:"):]) if uri.startswith("file:") else uri


def numbered_lines(spark, files: list[Path]):
    """Every line of `files` as `(file, line, raw)` with its real 1-based line number; plus per-file facts.

    Returns `(lines_df, file_facts)`; `file_facts` follows the order of `files`. An empty file is a
    `DataError`. Only one row per file block is brought to the driver.
    """
    from pyspark.sql import functions as F

    raw = (spark.read.option("lineSep", "\n").text([str(f) for f in files])
           .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("uri"),
                   F.col("_metadata.file_block_start").alias("block"),
                   F.monotonically_increasing_id().alias("mid")))
    blocks = (raw.groupBy("uri", "block")
              .agg(F.count(F.lit(1)).alias("n"), F.min("mid").alias("first_mid"),
                   F.min_by("raw", "mid").alias("first_raw"))
              .collect())
    by_file: dict[str, list] = {}
    for b in blocks:
        by_file.setdefault(_display_path(b["uri"]), []).append(b)
    rows, facts = [], []
    for f in files:
        key = str(Path(f).absolute())
        bl = sorted(by_file.get(key, []), key=lambda b: b["block"])
        if not bl:
            raise DataError(f"{f}: the file is empty; it needs a header line and data rows (check dataset.path).")
        before = 0
        for b in bl:
            # line = mid - first_mid + (lines in earlier blocks) + 1
            rows.append((b["uri"], int(b["block"]), before - int(b["first_mid"]) + 1, key))
            before += int(b["n"])
        facts.append(FileLines(path=key, lines=before, first_line=_strip_cr(bl[0]["first_raw"])))
    offsets = spark.createDataFrame(rows, "uri string, block long, delta long, file string")
    lines = (raw.join(F.broadcast(offsets), ["uri", "block"])
             .select("file", (F.col("mid") + F.col("delta")).alias("line"),
                     F.regexp_replace("raw", "\r$", "").alias("raw")))
    return lines, facts


def _strip_cr(s: str | None) -> str | None:
    return s[:-1] if s is not None and s.endswith("\r") else s


@dataclass
class ColumnSpec:
    """The expected type of a column and whether an empty value is an error (`required`)."""

    kind: str = STRING
    required: bool = False
    separator: str = " "          # ARRAY only
    threshold: float | None = None  # LABEL only: label = value >= threshold


@dataclass
class ParsedLines:
    """Parsed lines: `df` has `file`, `line`, `raw`, `reason` (null when the line is good) and typed columns."""

    df: object
    columns: list[str] = field(default_factory=list)


def parse_lines(lines, columns: list[str], specs: dict[str, ColumnSpec], layout: TextLayout) -> ParsedLines:
    """Split, check and type every line. Missing fields (empty strings) are nulls, not errors.

    Example:
        >>> p = parse_lines(lines, ["label", "I1"], {"label": ColumnSpec(LABEL, True),   # doctest: +SKIP
        ...                 "I1": ColumnSpec(DOUBLE)}, TextLayout("\\t"))
    """
    from pyspark.sql import functions as F

    n = len(columns)
    fields = lines.withColumn("_f", F.split(F.col("raw"), layout.split_pattern(), -1))
    # stage 1: the text of each field (empty -> null); separate projections keep each expression
    # computed once (Spark does not inline a costly expression into several consumers)
    text_cols = []
    for i, c in enumerate(columns):
        v = F.col("_f").getItem(i)
        if layout.quoted:
            v = F.regexp_replace(F.regexp_replace(v, r'^"(.*)"$', "$1"), '""', '"')
        text_cols.append(F.when(v != "", v).alias(f"_t{i}"))
    texts = fields.select("file", "line", "raw", F.size("_f").alias("_n"), *text_cols)
    # stage 2: typed values and one check per rule
    typed_cols, checks = [], [
        F.when(F.col("raw") == "", F.lit("empty_line")),
        F.when(F.col("raw").contains(REPLACEMENT_CHAR), F.lit("invalid_utf8")),
        F.when(F.col("_n") != n, F.concat(F.lit(f"wrong_column_count:expected {n}, got "), F.col("_n").cast("string"))),
    ]
    for i, c in enumerate(columns):
        spec = specs.get(c, ColumnSpec())
        t = F.col(f"_t{i}")
        if spec.kind == DOUBLE:
            v = t.cast("double")
            checks.append(F.when(t.isNotNull() & v.isNull(), F.lit(f"non_numeric:{c}")))
            checks.append(F.when(F.isnan(v) | (F.abs(v) == float("inf")), F.lit(f"not_finite:{c}")))
        elif spec.kind == LABEL:
            num = t.cast("double")
            checks.append(F.when(t.isNotNull() & num.isNull(), F.lit(f"non_numeric:{c}")))
            if spec.threshold is None:
                checks.append(F.when(num.isNotNull() & ~num.isin(0.0, 1.0), F.lit(f"label_not_binary:{c}")))
                v = num.cast("int")
            else:
                checks.append(F.when(F.isnan(num), F.lit(f"not_finite:{c}")))
                v = (num >= F.lit(spec.threshold)).cast("int")
        elif spec.kind == TIMESTAMP:
            v = F.coalesce(F.floor(t.cast("double")).cast("long"), F.unix_seconds(F.to_timestamp(t)))
            checks.append(F.when(t.isNotNull() & v.isNull(), F.lit(f"non_numeric:{c}")))
        elif spec.kind == ARRAY:
            v = F.filter(F.split(t, re.escape(spec.separator), -1), lambda x: x != "")
        else:
            v = t
        if spec.required:
            checks.append(F.when(t.isNull(), F.lit(f"missing_value:{c}")))
        typed_cols.append(v.alias(f"_v{i}"))
    checked = texts.select("file", "line", "raw", F.coalesce(*checks).alias("reason"), *typed_cols)
    ok = F.col("reason").isNull()
    out = checked.select("file", "line", "raw", "reason",
                         *[F.when(ok, F.col(f"_v{i}")).alias(c) for i, c in enumerate(columns)])
    return ParsedLines(df=out, columns=list(columns))

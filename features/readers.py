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

Example::

    layout = TextLayout(delimiter="\\t", quoted=False)
    lines, files = numbered_lines(spark, [Path("train.tsv.gz")])
    header = files[0].header_fields(layout)
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
        """Java regex that splits an unquoted line at the delimiter (a literal, no look-ahead: linear)."""
        return split_regex(self.delimiter)

    def split_python(self, line: str) -> list[str]:
        """A line split into fields in Python (header lines); CSV quoting (RFC 4180) understood."""
        if not self.quoted:
            return line.split(self.delimiter)
        rows = list(csv.reader(io.StringIO(line), delimiter=self.delimiter, strict=False))
        return rows[0] if rows else [""]


def split_regex(sep: str) -> str:
    r"""`sep` as the regex Spark's `split` takes, in the form Java's String.split handles without a regex engine.

    Example:
        >>> split_regex(","), split_regex("|"), split_regex("::")
        (',', '\\|', '\\Q::\\E')
    """
    if len(sep) == 1:
        return "\\" + sep if sep in ".$|()[{^?*+\\" else sep
    return "\\Q" + sep + "\\E"


def open_text(path: Path, mode: str = "rt") -> IO:
    """A plain or gzipped (by its `.gz` name) file; text modes decode UTF-8 (a BOM dropped), replacing bad bytes."""
    text = {} if "b" in mode else {"encoding": "utf-8-sig", "errors": "replace"}
    return (gzip.open if Path(path).name.endswith(".gz") else open)(path, mode, **text)


def has_quote(path: Path, chunk: int = 1 << 23) -> bool:
    """Whether the file (plain or gzipped) holds a double quote anywhere (a byte scan at memory speed).
    A gzipped file is read to its end, so a truncated one is a one-line `DataError` here.

    Example:
        >>> import tempfile
        >>> a = Path(tempfile.mkdtemp()) / "a.csv"
        >>> _ = a.write_text('y,a\\n1,"x, y"\\n')
        >>> has_quote(a)
        True
    """
    found, gz = False, Path(path).name.endswith(".gz")
    try:
        with open_text(path, "rb") as fh:
            while block := fh.read(chunk):
                found = found or b'"' in block
                if found and not gz:
                    return True
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(unreadable_message(Path(path), err)) from None
    return found


def unreadable_message(path: Path, err: BaseException) -> str:
    """One line for a file that cannot be read to its end (a truncated or corrupt .gz, a permission problem)."""
    if isinstance(err, (EOFError, zlib.error)) or "gzip" in str(err).lower() or "crc" in str(err).lower():
        return (f"{path}: the gzip file is truncated or corrupt ({err}); copy or compress it again "
                f"(`gzip -t {path.name}` checks it).")
    return f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); check the path and its permissions."


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
        names = [n.strip() for n in layout.split_python(self.first_line.lstrip("\ufeff"))]
        return [n if n else f"_c{i}" for i, n in enumerate(names)]


def list_files(path: Path) -> list[Path]:
    """The data files of `path`: the file itself, or the visible files of a folder, sorted by name."""
    path = Path(path).expanduser().resolve()  # one spelling of each file: no `..`, as Spark reports it
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
    try:
        blocks = (raw.groupBy("uri", "block")
                  .agg(F.count(F.lit(1)).alias("n"), F.min("mid").alias("first_mid"),
                       F.min_by("raw", "mid").alias("first_raw"))
                  .collect())
    except Exception:  # a truncated .gz fails in the JVM: name the file instead of a Java trace
        for f in files:
            if Path(f).name.endswith(".gz"):
                has_quote(Path(f))  # reads the file to its end; raises a one-line DataError when it is cut short
        raise
    by_file: dict[str, list] = {}
    for b in blocks:
        by_file.setdefault(_display_path(b["uri"]), []).append(b)
    rows, facts = [], []
    for f in files:
        key = str(Path(f).resolve())
        bl = sorted(by_file.get(key, []), key=lambda b: b["block"])
        if not bl:
            raise DataError(f"{f}: the file is empty; it needs a header line and data rows (check dataset.path).")
        before = 0
        for b in bl:
            # line = mid - first_mid + (lines in earlier blocks) + 1
            rows.append((b["uri"], int(b["block"]), before - int(b["first_mid"]) + 1, key))
            before += int(b["n"])
        facts.append(FileLines(path=key, lines=before, first_line=_strip_cr(bl[0]["first_raw"])))
    # the offsets as literal maps, not a joined frame: a Python-list DataFrame costs a Python worker
    # (and a broadcast job) on every read
    block_key = F.concat(F.col("uri"), F.lit("\u0000"), F.col("block").cast("string"))
    delta = F.create_map(*[F.lit(v) for u, b, d, _ in rows for v in (f"{u}\u0000{b}", d)])
    names = F.create_map(*[F.lit(v) for u, f in {u: f for u, _, _, f in rows}.items() for v in (u, f)])
    lines = raw.select(F.element_at(names, F.col("uri")).alias("file"),
                       (F.col("mid") + F.element_at(delta, block_key)).alias("line"), "raw")
    first = F.col("line") == 1  # a UTF-8 byte-order mark is not data
    # regexp_replace also decodes every line through a Java String, so invalid UTF-8 bytes become U+FFFD
    # (what the `invalid_utf8` check looks for): it must see every line
    lines = lines.select("file", "line", F.regexp_replace(F.when(first, F.regexp_replace("raw", "^\ufeff", ""))
                                                          .otherwise(F.col("raw")), "\r$", "").alias("raw"))
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
    positive: list | None = None    # LABEL only: label = value is one of these (strings or numbers)


@dataclass
class ParsedLines:
    """Parsed lines: `df` has `file`, `line`, `raw`, `reason` (null when the line is good) and typed columns."""

    df: object
    columns: list[str] = field(default_factory=list)


def label_is_positive(text, positive: list):
    """A boolean Column: the label text is one of `positive` (strings compared trimmed; numbers, and
    strings that are numbers, also compared as numbers, so 1 matches '1.0').

    Example::

        label_is_positive(F.col("_t0"), [">50K", ">50K."])
    """
    from pyspark.sql import functions as F

    num = text.cast("double")
    hit = F.lit(False)
    for p in positive:
        if isinstance(p, str):
            hit = hit | (F.trim(text) == F.lit(p.strip()))
            try:
                p = float(p)
            except ValueError:
                continue
        hit = hit | (num == F.lit(float(p)))
    return F.coalesce(hit, F.lit(False))


def assemble_records(lines):
    """CSV records from numbered lines: a line continues the record before it while a quoted field is
    open (an odd number of quote characters so far), so a quoted field may hold newlines (RFC 4180).

    Returns `(file, line, raw, _unclosed)`: `line` is the record's first line, `raw` its lines joined
    by `\\n`, `_unclosed` true when the record ends inside a quoted field (the end of its file).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    odd = ((F.length("raw") - F.length(F.regexp_replace("raw", '"', ""))) % 2).cast("long")
    w = Window.partitionBy("file").orderBy("line")
    before = F.coalesce(F.sum("_odd").over(w.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)) % 2
    marked = lines.withColumn("_odd", odd).withColumn("_start", (before == 0).cast("long"))
    numbered = marked.withColumn("_rec", F.sum("_start").over(w.rowsBetween(Window.unboundedPreceding, 0)))
    parts = F.array_sort(F.collect_list(F.struct("line", "raw")))
    return (numbered.groupBy("file", "_rec")
            .agg(F.min("line").alias("line"), F.array_join(F.transform(parts, lambda x: x["raw"]), "\n").alias("raw"),
                 (F.sum("_odd") % 2 == 1).alias("_unclosed"))
            .select("file", "line", "raw", "_unclosed"))


def csv_fields_udf(delimiter: str):
    """A pandas UDF: each CSV record (quotes, doubled quotes, delimiters and newlines inside quotes) to its fields."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def fields(raw):
        import csv as _csv
        import io as _io

        out = []
        for r in raw:
            rows = list(_csv.reader(_io.StringIO(r), delimiter=delimiter, strict=False)) if r else []
            out.append(rows[0] if len(rows) == 1 else [""] if not rows else [f for row in rows for f in row])
        return pd.Series(out)

    fields.__annotations__ = {"raw": pd.Series, "return": pd.Series}  # real classes (this module defers annotations)
    return pandas_udf(fields, "array<string>")


def parse_lines(lines, columns: list[str], specs: dict[str, ColumnSpec], layout: TextLayout,
                records: bool = False, utf8_in_specs_only: bool = False) -> ParsedLines:
    """Split, check and type every line. Missing fields (empty strings) are nulls, not errors.

    `records`: `lines` are CSV records from `assemble_records` (quotes possible); otherwise plain
    lines without any quote character, split at the delimiter.

    Example::

        p = parse_lines(lines, ["label", "I1"], {"label": ColumnSpec(LABEL, True),
                        "I1": ColumnSpec(DOUBLE)}, TextLayout("\\t"))
    """
    from pyspark.sql import functions as F

    if records:  # CSV records that may hold quotes: a real CSV parser, linear in the record's length
        unclosed = F.col("_unclosed")
        fields = lines.withColumn("_f", csv_fields_udf(layout.delimiter)(F.col("raw")))
    else:        # no quote anywhere: a literal split at the delimiter
        unclosed = F.lit(False)
        fields = lines.withColumn("_f", F.split(F.col("raw"), layout.split_pattern(), -1))
    # stage 1: the text of each field (empty -> null); separate projections keep each expression
    # computed once (Spark does not inline a costly expression into several consumers)
    text_cols = []
    for i, c in enumerate(columns):
        v = F.col("_f").getItem(i)
        text_cols.append(F.when(v != "", v).alias(f"_t{i}"))
    texts = fields.select("file", "line", "raw", F.size("_f").alias("_n"), unclosed.alias("_unclosed"), *text_cols)
    return ParsedLines(df=type_fields(texts, columns, specs, utf8_in_specs_only=utf8_in_specs_only),
                       columns=list(columns))


def type_fields(texts, columns: list[str], specs: dict[str, ColumnSpec], native_arrays: set[str] = frozenset(),
                utf8_in_specs_only: bool = False):
    """Stage 2 of the parse: `texts` (`file`, `line`, `raw`, `_n` field count, `_unclosed`, `_t<i>` the
    text of column i, null when empty) to typed columns and a `reason` per bad row.
    Columns in `native_arrays` already hold array<string> (Parquet input) instead of text.
    `utf8_in_specs_only`: invalid UTF-8 counts only in the columns of `specs` (a side table's other
    columns are not kept), else anywhere in the line."""
    from pyspark.sql import functions as F

    n = len(columns)
    if utf8_in_specs_only:
        bad_text = F.lit(False)
        for i, c in enumerate(columns):
            if c in specs and c not in native_arrays:
                bad_text = bad_text | F.coalesce(F.col(f"_t{i}").contains(REPLACEMENT_CHAR), F.lit(False))
    else:
        bad_text = F.col("raw").contains(REPLACEMENT_CHAR)
    typed_cols, checks = [], [
        F.when(F.col("raw") == "", F.lit("empty_line")),
        F.when(bad_text, F.lit("invalid_utf8")),
        F.when(F.col("_unclosed"), F.lit("unclosed_quote")),
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
            if spec.positive is not None:  # any value: 1 when listed, else 0
                v = label_is_positive(t, spec.positive).cast("int")
            elif spec.threshold is None:
                checks.append(F.when(t.isNotNull() & num.isNull(), F.lit(f"non_numeric:{c}")))
                checks.append(F.when(num.isNotNull() & ~num.isin(0.0, 1.0), F.lit(f"label_not_binary:{c}")))
                v = num.cast("int")
            else:
                checks.append(F.when(t.isNotNull() & num.isNull(), F.lit(f"non_numeric:{c}")))
                checks.append(F.when(F.isnan(num), F.lit(f"not_finite:{c}")))
                v = (num >= F.lit(spec.threshold)).cast("int")
        elif spec.kind == TIMESTAMP:
            v = F.coalesce(F.floor(t.cast("double")).cast("long"), F.unix_seconds(F.to_timestamp(t)))
            checks.append(F.when(t.isNotNull() & v.isNull(), F.lit(f"non_numeric:{c}")))
        elif spec.kind == ARRAY and c in native_arrays:
            v = F.filter(t.cast("array<string>"), lambda x: x.isNotNull() & (x != ""))
        elif spec.kind == ARRAY:
            v = F.filter(F.split(t, re.escape(spec.separator), -1), lambda x: x != "")
        else:
            v = t
        if spec.required:
            checks.append(F.when(t.isNull(), F.lit(f"missing_value:{c}")))
        typed_cols.append(v.alias(f"_v{i}"))
    checked = texts.select("file", "line", "raw", F.coalesce(*checks).alias("reason"), *typed_cols)
    ok = F.col("reason").isNull()
    return checked.select("file", "line", "raw", "reason",
                          *[F.when(ok, F.col(f"_v{i}")).alias(c) for i, c in enumerate(columns)])


def parquet_texts(df, columns: list[str], native_arrays: set[str]):
    """A Parquet DataFrame (straight from `spark.read.parquet`) in the shape `type_fields` reads: `file`,
    `line` (1-based row number in its file), `raw` (the row as JSON, for the quarantine) and the text
    of each column (numbers and times as Spark writes them as text; arrays kept as arrays)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    types = {f.name: f.dataType for f in df.schema.fields}
    text_cols = []
    for i, c in enumerate(columns):
        col = F.col(f"`{c}`")
        if c in native_arrays:
            text_cols.append(col.alias(f"_t{i}"))
            continue
        if isinstance(types[c], BooleanType):
            col = col.cast("int")
        v = col.cast("string")
        text_cols.append(F.when(v != "", v).alias(f"_t{i}"))
    path = F.regexp_replace(F.col("_metadata.file_path"), "^file:", "")
    return df.select(path.alias("file"), (F.col("_metadata.row_index") + 1).alias("line"),
                     F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns])).alias("raw"),
                     F.lit(len(columns)).alias("_n"), F.lit(False).alias("_unclosed"), *text_cols)

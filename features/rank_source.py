"""What the rank stage reads: the ingest output (typed Parquet) or a raw CSV/TSV file, with column roles.

A raw file needs a header; every column but the label is a feature, and a column whose every
non-empty value parses as a number is dense (unless roles are given). Rows whose fields do not fit
the header are marked in `_corrupt_record`; the rank stage counts them (`rows_malformed`) and
leaves them out, never silently.

A delimited file without any quote character is read as lines and split with Spark SQL's `split`
(about twice as fast as the CSV parser, which the rank stage's passes are bound by); on such
files that reading equals the CSV reader's. A file holding a quote character anywhere is read by
the CSV reader (a byte scan on the driver decides, at memory speed).

Example::

    src = read_raw(spark, Path("train.tsv.gz"), label="label", fmt="tsv")
    src.dense[:2]
    # -> ['I1', 'I2']
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from features.config import DatasetConfig
from features.errors import DataError
from features.readers import has_quote, open_text, split_regex, unreadable_message  # noqa: F401 (has_quote re-exported)

CORRUPT = "_corrupt_record"
NUMBER_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"   # what makes a raw column dense
NUMBER = re.compile(NUMBER_RE)


@dataclass
class RankSource:
    """A DataFrame with the label and feature columns, their roles, and where it came from."""

    df: Any
    path: str
    label: str
    categorical: list[str]
    dense: list[str]
    multi_valued: list[str] = field(default_factory=list)
    raw_text: bool = False      # all columns are strings and `_corrupt_record` marks malformed rows
    infer_dense: bool = False   # `dense` holds candidates (numeric in the first rows) to check on all rows
    header_rows: int = 0        # rows of `df` that are the header line (marked corrupt: not data, not malformed)

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.multi_valued, *self.dense]


def _open(path: Path, mode: str = "rt") -> IO:
    """A plain or gzipped (by its `.gz` name) file; text modes decode UTF-8 (a BOM dropped), replacing bad bytes."""
    return open_text(path, mode)


def _first_line(path: Path) -> str:
    try:
        with _open(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(unreadable_message(path, err)) from None


def _fields(line: str, sep: str) -> list[str]:
    """One line's fields; CSV quoting (RFC 4180) understood when the line holds a quote."""
    if '"' not in line:
        return line.split(sep)
    rows = list(csv.reader(io.StringIO(line), delimiter=sep, strict=False))
    return rows[0] if rows else [""]


def check_parquet_input(path: Path) -> None:
    """A one-line `DataError` when a folder given as Parquet holds CSV/TSV parts and no Parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check --input.")
    if not path.is_dir():
        return
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
    if any(p.name.endswith(".parquet") for p in files):
        return
    text = sorted(p for p in files if re.search(r"\.(csv|tsv|tab|txt)(\.gz)?$", p.name, re.I))
    if text:
        raise DataError(f"{path}: a folder of CSV/TSV parts ({text[0].name}, ...), not Parquet; `features rank --input` "
                        "reads one CSV/TSV file or a Parquet folder: join the parts into one file with one header "
                        "line, or ingest the folder with a run config and rank the ingest output (--config).")
    if not files:
        raise DataError(f"{path}: the folder is empty; give a Parquet folder or one CSV/TSV file.")


def check_raw_header(path: Path, label: str, fmt: str, separator: str | None = None) -> list[str]:
    """The header's column names; a one-line `DataError` for a missing, empty or label-less file.

    Example:
        >>> import tempfile
        >>> t = Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = t.write_text("clicked,site,hour\\n1,a,10\\n")
        >>> check_raw_header(t, "clicked", "csv")
        ['clicked', 'site', 'hour']
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check --input.")
    if path.is_dir():
        check_parquet_input(path)
        raise DataError(f"{path}: is a folder; give one CSV/TSV file, or --format parquet for a Parquet folder.")
    sep = separator or delimiter_for(fmt)
    header = _first_line(path)
    if not header.strip():
        raise DataError(f"{path}: the file is empty (no header line); give a {fmt.upper()} file with a header line and data rows.")
    names = [n.strip() for n in _fields(header, sep)]
    if label not in names:
        hint = f" (only one column found: is the delimiter {sep!r} right? try --format)" if len(names) == 1 else ""
        raise DataError(f"{path}: label column '{label}' is not in the header; columns are: {', '.join(names[:30])}{hint}; "
                        "pass the right --label.")
    return names


def numeric_in_sample(path: Path, names: list[str], sep: str, rows: int = 1000, quoted: bool = False) -> list[str]:
    """Columns whose non-empty values in the first `rows` data lines all look like numbers.

    Example:
        >>> import tempfile
        >>> t = Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = t.write_text("y,a,b\\n1,x,2.5\\n0,,-3\\n")
        >>> numeric_in_sample(t, ["y", "a", "b"], ",")
        ['y', 'b']
    """
    seen = {n: 0 for n in names}
    bad: set[str] = set()
    with _open(path) as fh:
        fh.readline()
        reader = csv.reader(fh, delimiter=sep, strict=False) if quoted else (l.rstrip("\r\n").split(sep) for l in fh)
        for _, fields in zip(range(rows), reader):
            if len(fields) != len(names):
                continue
            for n, v in zip(names, fields):
                v = v.strip()
                if v:
                    seen[n] += 1
                    if n not in bad and not NUMBER.match(v):
                        bad.add(n)
    return [n for n in names if seen[n] and n not in bad]


def q(name: str) -> str:
    """A column name quoted for Spark SQL.

    Example:
        >>> q("a`b")
        '`a``b`'
    """
    return "`" + name.replace("`", "``") + "`"


def sql_str(value: str) -> str:
    """A string literal for Spark SQL.

    Example:
        >>> print(sql_str("it's"))
        'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def delimiter_for(fmt: str) -> str:
    return {"csv": ",", "tsv": "\t"}.get(fmt, ",")


def read_raw(spark: Any, path: Path, label: str, fmt: str = "csv", exclude: list[str] | None = None,
             categorical: list[str] | None = None, dense: list[str] | None = None,
             multi_valued: list[str] | None = None, separator: str | None = None) -> RankSource:
    """A raw delimited file with a header, all columns as strings: split lines (`split_lines`), with
    the CSV reader's DataFrame as `quoted_fallback` for files that turn out to hold quoted fields.

    Example::

        read_raw(spark, Path("a.csv"), label="clicked").label
        # -> 'clicked'
    """
    from pyspark.sql.types import StringType, StructField, StructType

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check --input.")
    if fmt == "parquet":
        check_parquet_input(path)
        df = spark.read.parquet(str(path))
        return _with_roles(spark, df, str(path), label, exclude, categorical, dense, multi_valued)
    names = check_raw_header(path, label, fmt, separator)
    sep = separator or delimiter_for(fmt)
    schema = StructType([StructField(n, StringType()) for n in names] + [StructField(CORRUPT, StringType())])
    quoted = '"' in sep or has_quote(path)
    if quoted:  # RFC 4180: "" inside quotes is a quote; quoted fields may hold the delimiter and newlines
        df, header_rows = (spark.read.schema(schema).option("header", True).option("sep", sep).option("mode", "PERMISSIVE")
                           .option("multiLine", True).option("escape", '"').option("encoding", "UTF-8")
                           .option("columnNameOfCorruptRecord", CORRUPT).csv(str(path))), 0
    else:
        df, header_rows = split_lines(spark, path, names, sep, _first_line(path)), 1
    src = _with_roles(spark, df, str(path), label, exclude, categorical, dense, multi_valued, names, raw_text=True)
    src.header_rows = header_rows
    if src.infer_dense:
        numeric = set(numeric_in_sample(path, names, sep, quoted=quoted))
        feats = src.categorical
        src.dense = [c for c in feats if c in numeric]
        src.categorical = [c for c in feats if c not in numeric]
    return src


def split_lines(spark: Any, path: Path, names: list[str], sep: str, header: str) -> Any:
    """The file's lines split at `sep` into string columns `names` (empty field -> null): the CSV
    reader's result on a file without quotes. Blank lines are skipped; a line with another field
    count is malformed (`_corrupt_record` holds it). The header line is kept, marked corrupt (the
    rank stage subtracts it; a repeated header inside the data is then a malformed row, not data).

    Example::

        split_lines(spark, Path("a.csv"), ["y", "a"], ",", "y,a").columns
        # -> ['y', 'a', '_corrupt_record']
    """
    from pyspark.sql import functions as F

    # Java's String.trim test (every char <= ' '), regex only when the first char does not settle it
    blank = F.expr("substr(value, 1, 1) <= ' '") & F.col("value").rlike("^[\\x00-\\x20]*$")
    lines = spark.read.text(str(path)).where(~blank)
    # split inside a generator: filters on the fields (malformed, label missing) cannot be pushed
    # below it, which would split each line three times instead of once
    fields = lines.selectExpr(f"inline(array(struct(value, split(value, {sql_str(split_regex(sep))}, -1) AS _f)))")
    bom = sql_str("\ufeff")  # a UTF-8 byte-order mark before the header line
    bad = f"CASE WHEN size(_f) != {len(names)} OR trim(LEADING {bom} FROM value) = {sql_str(header)} THEN value END"
    return fields.selectExpr(*[f"nullif(try_element_at(_f, {i + 1}), '') AS {q(n)}" for i, n in enumerate(names)],
                             f"{bad} AS {CORRUPT}")


def read_ingest(spark: Any, folder: Path, dataset: DatasetConfig) -> RankSource:
    """The ingest stage's typed Parquet (`<folder>/data/`, or the folder itself) with the dataset's roles."""
    folder = Path(folder)
    data = folder / "data" if (folder / "data").exists() else folder
    if not data.exists():
        raise DataError(f"{folder}: no ingest output here (expected {data}); run `sparserec features ingest` first.")
    r = dataset.roles
    if r.label is None:
        raise DataError(f"dataset '{dataset.name}': roles.label is not set; ranking needs a label column.")
    df = spark.read.parquet(str(data))
    cols = set(df.columns)
    for role, names in (("label", [r.label]), ("categorical", r.categorical), ("dense", r.dense), ("multi_valued", r.multi_valued)):
        for c in names:
            if c not in cols:
                raise DataError(f"{data}: column '{c}' (dataset.roles.{role}) is not in the ingest output; "
                                f"columns are: {', '.join(sorted(cols))}; fix the role or re-run ingest.")
    multi = [c for c in r.multi_valued]
    return RankSource(df=df, path=str(data), label=r.label, categorical=list(r.categorical),
                      dense=list(r.dense), multi_valued=multi)


def _with_roles(spark: Any, df: Any, path: str, label: str, exclude: list[str] | None,
                categorical: list[str] | None, dense: list[str] | None, multi_valued: list[str] | None,
                names: list[str] | None = None, raw_text: bool = False) -> RankSource:
    names = names or list(df.columns)
    if label not in names:
        raise DataError(f"{path}: label column '{label}' is not in the data; columns are: {', '.join(names[:30])}.")
    unknown = [c for c in (exclude or []) + (categorical or []) + (dense or []) + (multi_valued or []) if c not in names]
    if unknown:
        raise DataError(f"{path}: column '{unknown[0]}' is not in the data; columns are: {', '.join(names[:30])}.")
    skip = set(exclude or []) | {label, CORRUPT}
    given = categorical is not None or dense is not None or multi_valued is not None
    if given:
        cat, den, mv = list(categorical or []), list(dense or []), list(multi_valued or [])
    else:
        from pyspark.sql.types import NumericType

        types = {f.name: f.dataType for f in df.schema.fields}
        feats = [c for c in names if c not in skip]
        den = [c for c in feats if isinstance(types[c], NumericType)]
        cat = [c for c in feats if c not in den]
        mv = []
    return RankSource(df=df, path=path, label=label, categorical=cat, dense=den, multi_valued=mv,
                      raw_text=raw_text, infer_dense=raw_text and not given)

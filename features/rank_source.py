"""What the rank stage reads: the ingest output (typed Parquet) or a raw CSV/TSV file, with column roles.

A raw file needs a header; every column but the label is a feature, and a column whose every
non-empty value parses as a number is dense (unless roles are given). Rows whose fields do not fit
the header are marked in `_corrupt_record`; the rank stage counts them (`rows_malformed`) and
leaves them out, never silently.

A delimited file without any quote character is read as lines and split with Spark SQL's `split`
(about twice as fast as the CSV parser, which the rank stage's passes are bound by); on such
files that reading equals the CSV reader's. A file holding a quote character anywhere is read by
the CSV reader (a byte scan on the driver decides, at memory speed).

Example:
    >>> src = read_raw(spark, Path("train.tsv.gz"), label="label", fmt="tsv")      # doctest: +SKIP
    >>> src.dense[:2]                                                              # doctest: +SKIP
    ['I1', 'I2']
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from features.config import DatasetConfig
from features.errors import DataError

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
    """A plain or gzipped (by its `.gz` name) file; text modes decode UTF-8, replacing bad bytes."""
    text = {} if "b" in mode else {"encoding": "utf-8", "errors": "replace"}
    return (gzip.open if path.name.endswith(".gz") else open)(path, mode, **text)


def _first_line(path: Path) -> str:
    try:
        with _open(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read ({err}); give a plain or gzipped CSV/TSV file.") from None


def check_raw_header(path: Path, label: str, fmt: str, separator: str | None = None) -> list[str]:
    """The header's column names; a one-line `DataError` for a missing, empty or label-less file.

    Example:
        >>> check_raw_header(Path("t.csv"), "clicked", "csv")       # doctest: +SKIP
        ['clicked', 'site', 'hour']
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check --input.")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give one CSV/TSV file, or --format parquet for a Parquet folder.")
    sep = separator or delimiter_for(fmt)
    header = _first_line(path)
    if not header.strip():
        raise DataError(f"{path}: the file is empty (no header line); give a {fmt.upper()} file with a header line and data rows.")
    names = [n.strip().strip('"') for n in header.split(sep)]
    if label not in names:
        hint = f" (only one column found: is the delimiter {sep!r} right? try --format)" if len(names) == 1 else ""
        raise DataError(f"{path}: label column '{label}' is not in the header; columns are: {', '.join(names[:30])}{hint}; "
                        "pass the right --label.")
    return names


def numeric_in_sample(path: Path, names: list[str], sep: str, rows: int = 1000) -> list[str]:
    """Columns whose non-empty values in the first `rows` data lines all look like numbers.

    Example:
        >>> numeric_in_sample(Path("t.csv"), ["y", "a", "b"], ",")       # doctest: +SKIP
        ['y', 'b']
    """
    seen = {n: 0 for n in names}
    bad: set[str] = set()
    with _open(path) as fh:
        fh.readline()
        for _, line in zip(range(rows), fh):
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) != len(names):
                continue
            for n, v in zip(names, fields):
                v = v.strip().strip('"')
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

    Example:
        >>> read_raw(spark, Path("a.csv"), label="clicked").label          # doctest: +SKIP
        'clicked'
    """
    from pyspark.sql.types import StringType, StructField, StructType

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check --input.")
    if fmt == "parquet":
        df = spark.read.parquet(str(path))
        return _with_roles(spark, df, str(path), label, exclude, categorical, dense, multi_valued)
    names = check_raw_header(path, label, fmt, separator)
    sep = separator or delimiter_for(fmt)
    schema = StructType([StructField(n, StringType()) for n in names] + [StructField(CORRUPT, StringType())])
    if '"' in sep or has_quote(path):
        df, header_rows = (spark.read.schema(schema).option("header", True).option("sep", sep).option("mode", "PERMISSIVE")
                           .option("columnNameOfCorruptRecord", CORRUPT).csv(str(path))), 0
    else:
        df, header_rows = split_lines(spark, path, names, sep, _first_line(path)), 1
    src = _with_roles(spark, df, str(path), label, exclude, categorical, dense, multi_valued, names, raw_text=True)
    src.header_rows = header_rows
    if src.infer_dense:
        numeric = set(numeric_in_sample(path, names, sep))
        feats = src.categorical
        src.dense = [c for c in feats if c in numeric]
        src.categorical = [c for c in feats if c not in numeric]
    return src


def has_quote(path: Path, chunk: int = 1 << 23) -> bool:
    """Whether the file (plain or gzipped) holds a double quote anywhere.

    Example:
        >>> has_quote(Path("a.csv"))       # doctest: +SKIP
        False
    """
    with _open(path, "rb") as fh:
        while block := fh.read(chunk):
            if b'"' in block:
                return True
    return False


def split_regex(sep: str) -> str:
    r"""`sep` as the regex Spark's `split` takes, in the form Java's String.split handles without a regex engine.

    Example:
        >>> split_regex(","), split_regex("|"), split_regex("::")
        (',', '\\|', '\\Q::\\E')
    """
    if len(sep) == 1:
        return "\\" + sep if sep in ".$|()[{^?*+\\" else sep
    return "\\Q" + sep + "\\E"


def split_lines(spark: Any, path: Path, names: list[str], sep: str, header: str) -> Any:
    """The file's lines split at `sep` into string columns `names` (empty field -> null): the CSV
    reader's result on a file without quotes. Blank lines are skipped; a line with another field
    count is malformed (`_corrupt_record` holds it). The header line is kept, marked corrupt (the
    rank stage subtracts it; a repeated header inside the data is then a malformed row, not data).

    Example:
        >>> split_lines(spark, Path("a.csv"), ["y", "a"], ",", "y,a").columns     # doctest: +SKIP
        ['y', 'a', '_corrupt_record']
    """
    from pyspark.sql import functions as F

    # Java's String.trim test (every char <= ' '), regex only when the first char does not settle it
    blank = F.expr("substr(value, 1, 1) <= ' '") & F.col("value").rlike("^[\\x00-\\x20]*$")
    lines = spark.read.text(str(path)).where(~blank)
    # split inside a generator: filters on the fields (malformed, label missing) cannot be pushed
    # below it, which would split each line three times instead of once
    fields = lines.selectExpr(f"inline(array(struct(value, split(value, {sql_str(split_regex(sep))}, -1) AS _f)))")
    bad = f"CASE WHEN size(_f) != {len(names)} OR value = {sql_str(header)} THEN value END"
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

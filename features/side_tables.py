"""Side tables (`dataset.tables`): small tables joined to every row of the main file on a key, in ingest.

Each side table brings the columns that `dataset.roles` name (and its `flags` columns); it is read
with the same rules as the main file (csv / tsv / parquet, delimiter, header,
typed per `dataset.roles`, bad rows quarantined to `quarantine_<name>/` with `file`, `line`, `raw`,
`reason`; invalid UTF-8 counts only in the columns it brings, so MovieLens' Latin-1 titles do not
matter); a key seen again is quarantined as `duplicate_key:<key>=<value>` (the first row wins).
The main rows are left-joined, so none is lost: a row whose key has no match keeps null attributes
and is counted (`unmatched_rows`, `missing_key_rows`). `flags` build a multi-valued column from 0/1
flag columns (MovieLens' 19 genre flags -> `genres: [Action, Comedy]`).

Example (MovieLens' u.user has no header line, so the config names its columns):
    >>> table_columns(SideTableConfig(name="users", path="u.user", delimiter="|", key="user", header=False,
    ...                               columns=["user", "age", "gender", "occupation", "zip"]))
    ['user', 'age', 'gender', 'occupation', 'zip']
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from features.config import DatasetConfig, IngestConfig, SideTableConfig
from features.errors import DataError
from features.readers import STRING, ColumnSpec, TextLayout, list_files, open_text, unreadable_message
from features.table_read import check_balance, check_share, quarantine_reasons, read_table, write_quarantine

FALSE_FLAGS = ("", "0", "0.0", "false", "False", "no")


def table_columns(t: SideTableConfig) -> list[str]:
    """The side table's column names: its `columns` list, its header line or its Parquet schema (no Spark)."""
    if not t.header and t.columns:
        return list(t.columns)
    path = Path(t.path)
    if t.format == "parquet":
        import pyarrow.parquet as pq

        first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
        if first is None:
            raise DataError(f"{path}: no .parquet file here; fix dataset.tables '{t.name}' path or format.")
        return list(pq.read_schema(first).names)
    first = list_files(path)[0]
    try:
        with open_text(first) as fh:
            line = fh.readline().rstrip("\r\n")
    except (OSError, EOFError) as err:
        raise DataError(unreadable_message(first, err)) from None
    return [n.strip() or f"_c{i}" for i, n in enumerate(TextLayout.for_format(t.format, t.delimiter).split_python(line))]


def split_specs(dataset: DatasetConfig, specs: dict, side: dict[str, list[str]]) -> tuple[dict, dict[str, dict]]:
    """Role specs of the main file, and of each side table (its role columns + its key, required).

    `side` maps a table name to its column names. A column that a side table (or its `flags`) brings
    is not looked for in the main file; the key columns stay in both.
    """
    brought: dict[str, str] = {}
    per_table: dict[str, dict] = {}
    for t in dataset.tables:
        names = side[t.name]
        for key in (t.key, *[c for cols in t.flags.values() for c in cols]):
            if key not in names:
                raise DataError(f"{t.path}: column '{key}' (dataset.tables '{t.name}') is not in the table's columns "
                                f"({', '.join(names[:12])}); fix the table's key or flags.")
        mine = {c: specs[c] for c in names if c in specs and c != t.key}
        mine[t.key] = (f"tables.{t.name}.key", ColumnSpec(STRING, required=True))
        per_table[t.name] = mine
        for c in [*mine, *t.flags]:
            if c != t.key:
                if c in brought:
                    raise DataError(f"column '{c}' is in both dataset.tables '{brought[c]}' and '{t.name}'; "
                                    "rename it in one of them (header or columns list).")
                brought[c] = t.name
    main = {c: s for c, s in specs.items() if c not in brought}
    return main, per_table


def _flag_column(sources: list[str]):
    from pyspark.sql import functions as F

    picked = [F.when(F.trim(F.col(f"`{s}`")).isin(*FALSE_FLAGS) | F.col(f"`{s}`").isNull(), F.lit(None))
              .otherwise(F.lit(s)) for s in sources]
    return F.filter(F.array(*picked), lambda x: x.isNotNull())


def join_side_tables(spark, good, main_columns: list[str], dataset: DatasetConfig, per_table: dict[str, dict],
                     inputs: Mapping[str, Path], out: Path, cfg: IngestConfig) -> tuple[object, list[str], dict]:
    """`good` (typed main rows) left-joined with every side table; returns (joined, columns, summary).

    Writes `out/quarantine_<name>/` per table. The summary holds, per table, `rows_in`, `rows_ok`,
    `rows_quarantined`, `quarantine_reasons`, `columns` and (filled by `count_unmatched`) the unmatched counts.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F


    roles = set(dataset_role_columns(dataset))
    columns, summary = list(main_columns), {}
    for i, t in enumerate(dataset.tables):
        where = f"dataset.tables[{i}]"
        on = t.on or t.key
        if on not in main_columns:
            raise DataError(f"{dataset.path}: column '{on}' ({where}.on, the key of table '{t.name}') is not in the "
                            f"main file ({', '.join(main_columns[:12])}); set {where}.on to the main file's key column.")
        path = Path(inputs.get(f"table_{t.name}") or t.path)
        parsed, cols, rows_in = read_table(spark, path, t.format, t.delimiter, t.header, t.columns,
                                            per_table[t.name], where, utf8_in_specs_only=True)
        first = Window.partitionBy(t.key).orderBy("file", "line")
        parsed = parsed.withColumn(
            "reason", F.when(F.col("reason").isNull() & (F.row_number().over(first) > 1),
                             F.concat(F.lit(f"duplicate_key:{t.key}="), F.col(t.key))).otherwise(F.col("reason")))
        parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
        qpath = out / f"quarantine_{t.name}"
        write_quarantine(parsed.where(F.col("reason").isNotNull()), qpath)
        reasons = quarantine_reasons(spark, qpath)
        bad = sum(reasons.values())
        keep = [c for c in cols if c != t.key and c in roles]  # a side table brings its role columns
        side = parsed.where(F.col("reason").isNull()).select(
            F.col(t.key).alias(f"_key_{t.name}"), *[F.col(f"`{c}`") for c in keep],
            *[_flag_column(srcs).alias(name) for name, srcs in t.flags.items()])
        ok = side.count()
        check_balance(str(path), rows_in, ok, bad)
        check_share(spark, path, rows_in, bad, qpath, cfg, where=where)
        good = good.join(side, good[on].cast("string") == side[f"_key_{t.name}"], "left")
        added = [*keep, *t.flags]
        columns += added
        summary[t.name] = {"rows_in": rows_in, "rows_ok": ok, "rows_quarantined": bad, "quarantine_reasons": reasons,
                           "on": on, "columns": added}
    return good, columns, summary


def count_unmatched(joined, dataset: DatasetConfig, summary: dict) -> None:
    """Per table: main rows with a key that no side row has (`unmatched_rows`, `unmatched_keys`) and rows
    without a key (`missing_key_rows`), in one pass over `joined`."""
    from pyspark.sql import functions as F

    aggs = []
    for t in dataset.tables:
        on, k = F.col(t.on or t.key), F.col(f"_key_{t.name}")
        miss = on.isNotNull() & k.isNull()
        aggs += [F.sum(miss.cast("long")).alias(f"u_{t.name}"), F.count_distinct(F.when(miss, on)).alias(f"k_{t.name}"),
                 F.sum(on.isNull().cast("long")).alias(f"n_{t.name}")]
    if not aggs:
        return
    row = joined.agg(*aggs).first()
    for t in dataset.tables:
        summary[t.name].update(unmatched_rows=int(row[f"u_{t.name}"] or 0), unmatched_keys=int(row[f"k_{t.name}"] or 0),
                               missing_key_rows=int(row[f"n_{t.name}"] or 0))


def dataset_role_columns(dataset: DatasetConfig) -> list[str]:
    """Every column the roles name."""
    r = dataset.roles
    cols = [r.label, *r.dense, *r.categorical, *r.multi_valued, r.session_id, r.user_id, r.item_id, r.timestamp]
    return [c for c in dict.fromkeys(cols) if c is not None]

"""Checks a run config against its files before any engine starts: header, roles, Spark settings, output folder.

Everything here runs in plain Python in well under a second (the first line of each data file is
read with `gzip` / `csv`), so `config validate` and `run` report these mistakes at once instead of
after a Spark start. Each problem is one `ConfigError` line naming the file, the key and the fix.

Example:
    >>> from jobs.config import load_config
    >>> sample = Path(__file__).parents[1] / "configs" / "sample_ctr.yaml"
    >>> preflight(load_config(sample), str(sample))          # the bundled sample passes: nothing raised
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import zlib
from pathlib import Path

from features.errors import ConfigError
from jobs.config import RunConfig

# local, local[4], local[*], local[4,2], local-cluster[2,1,1024], spark://h:7077, yarn, k8s://..., mesos://...
_MASTER = re.compile(r"^(local(\[(\*|\d+)(,\s*\d+)?\])?|local-cluster\[\d+,\s*\d+,\s*\d+\]|yarn|(spark|k8s|mesos)://\S+)$")
_MEMORY = re.compile(r"^\d+[kmgtp]?b?$", re.IGNORECASE)  # the JVM's size syntax: 512m, 4g, 2048 (MiB)


def _first_line(path: Path) -> str:
    """The first line of a plain or gzipped text file (BOM dropped)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.readline(1 << 20)
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError(f"{path}: cannot be read ({err}); check the file (a .gz file must be complete gzip).") from None
    try:
        return raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the first line is not UTF-8 text; give a csv/tsv text file (or its .gz).") from None


def header_columns(path: Path, fmt: str, delimiter: str | None) -> list[str]:
    """Column names in the header line of a csv/tsv file (quoted CSV names unquoted)."""
    sep = delimiter or ("\t" if fmt == "tsv" else ",")
    line = _first_line(path)
    if fmt == "csv":
        fields = next(csv.reader(io.StringIO(line), delimiter=sep), [])
    else:
        fields = line.split(sep)
    return [f.strip() or f"_c{i}" for i, f in enumerate(fields)]


def parquet_columns(path: Path, where: str, source: str) -> list[str]:
    """Column names of a Parquet file or folder (the first `.parquet` file's footer, read with pyarrow)."""
    import pyarrow.parquet as pq

    first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
    if first is None:
        raise ConfigError(f"{source}: key '{where}.path': {path} holds no .parquet file; point it at Parquet data "
                          f"or set {where}.format to csv/tsv.")
    try:
        return list(pq.read_schema(first).names)
    except Exception as err:  # pyarrow.ArrowInvalid: not a Parquet file
        raise ConfigError(f"{source}: key '{where}.format': {first} is not a Parquet file ({err}); set "
                          f"{where}.format to csv/tsv or fix the path.") from None


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def check_header(cfg: RunConfig, source: str) -> None:
    """Every role column is in the file's header (or `dataset.columns`); same for the item table."""
    from features.ingest import dataset_column_specs, item_column_specs

    ds = cfg.dataset
    specs, side = dataset_column_specs(ds), []
    if ds.tables:  # side tables bring some role columns (features/side_tables.py)
        from features.side_tables import split_specs, table_columns

        specs, per = split_specs(ds, specs, {t.name: table_columns(t) for t in ds.tables})
        side = [(f"dataset.tables[{i}]", t.path, t.format, t.delimiter, t.header, t.columns, per[t.name])
                for i, t in enumerate(ds.tables)]
    tables = [("dataset", ds.path, ds.format, ds.delimiter, ds.header, ds.columns, specs), *side]
    if ds.items is not None:
        it = ds.items
        tables.append(("dataset.items", it.path, it.format, it.delimiter, it.header, None, item_column_specs(it)))
    for where, path, fmt, delimiter, header, declared, specs in tables:
        files = _data_files(Path(path))
        if not files:
            raise ConfigError(f"{source}: key '{where}.path': {path} holds no data files; point it at a file or a "
                              "folder of files.")
        if fmt == "parquet":
            columns, src = parquet_columns(Path(path), where, source), f"Parquet schema of {path}"
        else:
            columns = header_columns(files[0], fmt, delimiter) if header else list(declared or [])
            src = f"header of {files[0]}" if header else f"'{where}.columns' list"
        dup = next((c for c in columns if columns.count(c) > 1), None)
        if dup is not None:
            raise ConfigError(f"{source}: column '{dup}' appears twice in the {src}; rename one.")
        for col, (key, _) in specs.items():
            if col not in columns:
                shown = ", ".join(columns[:12]).replace("\t", "\\t") + (", ..." if len(columns) > 12 else "")
                hint = (f" (only one column was found: is the delimiter right? set {where}.delimiter or {where}.format)"
                        if len(columns) == 1 else "")
                raise ConfigError(f"{source}: key '{where}.{key}': column '{col}' is not in the {src} "
                                  f"({shown}){hint}; fix {where}.{key} or the {src.split(' of ')[0]}.")


def check_engine(cfg: RunConfig, source: str) -> None:
    """Spark master URL and driver memory are in a form Spark can start with."""
    spark = cfg.engine.spark
    if not _MASTER.match(spark.master):
        raise ConfigError(f"{source}: key 'engine.spark.master': '{spark.master}' is not a Spark master URL; use "
                          "local[*], local[N], spark://HOST:PORT, yarn or k8s://URL.")
    if not _MEMORY.match(spark.driver_memory):
        raise ConfigError(f"{source}: key 'engine.spark.driver_memory': '{spark.driver_memory}' is not a JVM memory "
                          "size; write a whole number with a unit, e.g. 2g or 512m.")


def check_output_dir(cfg: RunConfig, source: str, run_dir: Path | None = None, create: bool = False) -> None:
    """`output_dir` is (or can become) a writable folder; with `create`, `run_dir` is made now."""
    out = Path(cfg.output_dir)
    if str(out.resolve()).startswith(("/proc/", "/sys/", "/dev/")) or str(out.resolve()) in ("/proc", "/sys", "/dev"):
        raise ConfigError(f"{source}: key 'output_dir': {out} is inside a system folder (/proc, /sys, /dev); set "
                          "output_dir to a folder of your own, e.g. runs.")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{source}: key 'output_dir': {probe} is a file, not a folder; set output_dir to a folder "
                          "(it is created when missing).")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{source}: key 'output_dir': {probe} is not writable by this user; set output_dir to a "
                          "writable folder.")
    if create and run_dir is not None:
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{source}: key 'output_dir': cannot create {run_dir} ({err.strerror}); set output_dir "
                              "to a writable folder.") from None


def preflight(cfg: RunConfig, source: str) -> None:
    """All checks that need no engine: header and roles, Spark settings, output folder."""
    check_engine(cfg, source)
    check_output_dir(cfg, source)
    check_header(cfg, source)

"""`sparserec features rank`: OutRank-style feature ranking of an ingest output or of any raw file.

Example:
    $ sparserec features rank --input data/ctr/train.tsv.gz --label label --output out/rank --format tsv
    $ sparserec features rank --config configs/sample_ctr.yaml --input runs/r1/ingest --output runs/r1/rank
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from features.errors import UserError
from jobs.groups import features_app


DEFAULT_CLASS_ARCHIVE = "~/.cache/sparserec/jvm"


def _format_of(path: Path, fmt: Optional[str]) -> str:
    if fmt:
        return fmt
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".tsv") or name.endswith(".tab"):
        return "tsv"
    if path.is_dir() or name.endswith(".parquet"):
        return "parquet"
    return "csv"


def rank_command(
    input: Path = typer.Option(..., "--input", help="an ingest stage folder (with --config), or a raw CSV/TSV file (plain or .gz) with a header"),
    output: Path = typer.Option(..., "--output", help="folder to write ranking.tsv, pairs.tsv, selection.tsv, feature_spec.json, top_features.png"),
    config: Optional[Path] = typer.Option(None, "--config", help="a run config (YAML): dataset roles and features.rank settings"),
    label: Optional[str] = typer.Option(None, "--label", help="label column of a raw file (config-free form)"),
    format: Optional[str] = typer.Option(None, "--format", help="csv | tsv | parquet (default: from the file name)"),
    heuristic: Optional[str] = typer.Option(None, "--heuristic", help="mi | mi-shifted | mi-permutation (default mi-permutation)"),
    exclude: list[str] = typer.Option([], "--exclude", help="a column that is not a feature (repeatable), e.g. a timestamp"),
    pairs_top_k: Optional[int] = typer.Option(None, "--pairs-top-k", help="features entering the pair search (0: no pairs, fastest)"),
    master: Optional[str] = typer.Option(None, "--master", help="Spark master (default: the config's, else local[*])"),
    class_archive: Optional[bool] = typer.Option(
        None, "--class-archive/--no-class-archive",
        help=f"local Spark: keep a JVM class archive in {DEFAULT_CLASS_ARCHIVE} (about 150 MB) that halves every start "
             "after the first (default: on without --config, else the config's engine.spark.class_archive)"),
) -> None:
    """Rank features by noise-corrected mutual information with the label (counts on Spark)."""
    from rich.console import Console

    from features.config import ColumnRoles, DatasetConfig, RankConfig, SparkConfig

    console = Console(stderr=True)
    if config is not None:
        from jobs.config import load_config

        run = load_config(config)
        dataset, cfg, spark_cfg = run.dataset, run.features.rank, run.engine.spark
        inputs = {"ingest": input} if input.is_dir() else {"raw": input}
        if label is not None:
            raise UserError("--label is taken from the config's dataset.roles.label; leave it out with --config.")
    else:
        if label is None:
            raise UserError("give --label COLUMN (the class column of the raw file), or --config FILE.")
        fmt = _format_of(input, format)
        if fmt not in ("csv", "tsv", "parquet"):
            raise UserError(f"--format {fmt!r}: choose csv, tsv or parquet.")
        dataset = DatasetConfig(name=input.stem, path=input, format=fmt, kind="ctr", roles=ColumnRoles(label=label))
        # a quick ranking tool: keep a JVM class archive so every start after the first is faster
        cfg, spark_cfg = RankConfig(), SparkConfig(class_archive=DEFAULT_CLASS_ARCHIVE)
        inputs = {"raw": input}
    updates = {k: v for k, v in (("heuristic", heuristic), ("pairs_top_k", pairs_top_k)) if v is not None}
    if updates:
        cfg = RankConfig.model_validate({**cfg.model_dump(), **updates})
    if master:
        spark_cfg = spark_cfg.model_copy(update={"master": master})
    if class_archive is not None:
        spark_cfg = spark_cfg.model_copy(update={"class_archive": DEFAULT_CLASS_ARCHIVE if class_archive else None})
    if "raw" in inputs and dataset.format != "parquet":
        from features.rank_source import check_raw_header

        check_raw_header(Path(inputs["raw"]), dataset.roles.label, dataset.format)  # fail fast, before Spark starts
    elif "raw" in inputs:
        from features.rank_source import check_parquet_input

        check_parquet_input(Path(inputs["raw"]))  # a folder of CSV parts is not Parquet

    from features.outrank import rank
    from features.spark import spark_session

    t0 = time.perf_counter()
    with console.status("starting Spark"):
        spark = spark_session(spark_cfg)
    started = round(time.perf_counter() - t0, 3)
    with console.status(f"ranking {input} ({cfg.heuristic})"):
        summary = rank(inputs, output, dataset, cfg, spark, exclude=list(exclude))
    summary["seconds"] = {"spark_start": started, **summary["seconds"]}
    typer.echo(f"ranked {summary['features']} features on {summary['rows_out']:,} rows "
               f"({summary['rows_malformed']:,} malformed, {summary['rows_without_label']:,} without label) -> {output}")
    typer.echo("top: " + ", ".join(summary["top"]))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))


def register(app: typer.Typer) -> None:
    """Add `rank` to the `features` group."""
    features_app.command("rank")(rank_command)

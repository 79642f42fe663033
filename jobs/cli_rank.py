"""`sparserec features rank`: OutRank-style feature ranking of an ingest output or of any raw file.

Two modes. With `--config` it is the run's `rank` stage (`run --only rank`, `jobs.pipeline.run_only`):
same function and fingerprint, `--output runs/<run>/rank` is that run's stage folder (skipped when
current), `--input` an ingest folder (default: the one beside `--output`) or a raw file, vocab sizes
from `--vocab` or the vocab folder beside `--output` when there is one; `--heuristic` and
`--pairs-top-k` override `features.rank`, `--exclude` is a stage option (both part of the
fingerprint). Without `--config` it ranks any CSV/TSV/Parquet file by `--label` into `--output`
directly: no run, no manifest, no skipping.

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
    config: Optional[Path] = typer.Option(None, "--config", help="a run config (YAML): dataset roles and features.rank settings; makes this the run's rank stage (skipped when current)"),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="with --config: the vocab stage folder (sizes.json); default: the vocab folder beside --output, if any"),
    force: bool = typer.Option(False, "--force", help="with --config: rank again even when the output is current"),
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
        return _rank_in_run(config, input, output, vocab, label, heuristic, pairs_top_k, exclude, master, class_archive, force)
    if vocab is not None or force:
        raise UserError("--vocab and --force need --config (the run's rank stage); leave them out to rank a file alone.")
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
    _echo(summary, output)


def _echo(summary: dict, output: Path) -> None:
    typer.echo(f"ranked {summary['features']} features on {summary['rows_out']:,} rows "
               f"({summary['rows_malformed']:,} malformed, {summary['rows_without_label']:,} without label) -> {output}")
    typer.echo("top: " + ", ".join(summary["top"]))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))


def _rank_in_run(config: Path, input: Path, output: Path, vocab: Optional[Path], label: Optional[str],
                 heuristic: Optional[str], pairs_top_k: Optional[int], exclude: list[str], master: Optional[str],
                 class_archive: Optional[bool], force: bool) -> None:
    """`features rank --config`: the registry's rank stage into `--output` (`run --only rank`)."""
    from features.config import RankConfig
    from jobs.cli_features import load_stage_config, run_stage_command

    if label is not None:
        raise UserError("--label is taken from the config's dataset.roles.label; leave it out with --config.")
    cfg = load_stage_config(config, master, check_paths=False)
    updates = {k: v for k, v in (("heuristic", heuristic), ("pairs_top_k", pairs_top_k)) if v is not None}
    if updates:
        cfg.features.rank = RankConfig.model_validate({**cfg.features.rank.model_dump(), **updates})
    if class_archive is not None:
        cfg.engine.spark = cfg.engine.spark.model_copy(update={"class_archive": DEFAULT_CLASS_ARCHIVE if class_archive else None})
    sibling = Path(output).parent / "vocab"
    inputs: dict[str, Path | None] = {"ingest": input, "vocab": vocab or (sibling if (sibling / "manifest.json").exists() else None)}
    if not input.is_dir():  # a raw file read with the config's dataset settings
        inputs = {"raw": input, "ingest": None, "vocab": vocab}
        if cfg.dataset.format != "parquet" and input.exists():
            from features.rank_source import check_raw_header

            check_raw_header(input, cfg.dataset.roles.label, cfg.dataset.format)  # fail fast, before Spark starts
    o = run_stage_command("rank", cfg, output, inputs, force, options={"exclude": list(exclude)} if exclude else None, quiet=True)
    if o.status == "skipped":
        typer.echo(f"{output}: unchanged inputs and settings, skipped (use --force to rank again)")
    _echo({**o.summary, "rows_out": o.rows_out}, output)


def register(app: typer.Typer) -> None:
    """Add `rank` to the `features` group."""
    features_app.command("rank")(rank_command)

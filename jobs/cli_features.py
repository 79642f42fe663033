"""`sparserec features ingest | vocab | sessions | quality`: the Spark feature stages, each usable alone.

Each command reads a run config, runs one stage through `jobs.runs.run_stage` (atomic output folder
with `manifest.json`; skipped when inputs and settings are unchanged, unless `--force`) and prints
a short summary. `--output` is the stage folder to write (e.g. runs/r1/ingest).

Example:
    $ sparserec features ingest --config configs/sample_ctr.yaml --output runs/r1/ingest
    $ sparserec features vocab --config configs/sample_ctr.yaml --input runs/r1/ingest --output runs/r1/vocab
    $ sparserec features quality --config configs/sample_ctr.yaml --input runs/r1/ingest --output runs/r1/quality
    $ sparserec features sessions --config configs/sample_sessions.yaml --input runs/s1/ingest --output runs/s1/sessions
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from features.errors import UserError
from jobs.groups import features_app

console = Console()

CONFIG_HELP = "a run config (YAML): the dataset and the features.* settings"
INPUT_HELP = "the ingest stage folder to read (holds data/)"
MASTER_HELP = "Spark master URL (default: the config's engine.spark.master)"
FORCE_HELP = "run even when the output is current (same inputs and settings)"


def _stage_settings(stage: str, cfg) -> Any:
    return getattr(cfg.features, stage)


def _run(stage: str, config: Path, output: Path, inputs: dict[str, Path], master: Optional[str], force: bool,
         fn_of: Callable[[Any], Callable], settings_key: str) -> dict:
    """Load the config, start Spark, run the stage atomically; return the manifest summary."""
    from jobs.config import load_config
    from jobs.runs import run_stage

    cfg = load_config(config)
    for k, p in inputs.items():
        if not Path(p).exists():
            raise UserError(f"--input {p}: no such folder; run `sparserec features ingest` first or fix the path.")
    spark_cfg = cfg.engine.spark if master is None else cfg.engine.spark.model_copy(update={"master": master})
    settings = {"dataset": cfg.dataset.model_dump(mode="json"),
                settings_key: _stage_settings(settings_key, cfg).model_dump(mode="json")}
    from features.spark import spark_session

    with console.status(f"starting Spark ({spark_cfg.master})"):
        spark = spark_session(spark_cfg)
    output = Path(output)
    with console.status(f"{stage}: {', '.join(str(v) for v in inputs.values())} -> {output}"):
        m = run_stage(output.parent, output.name, fn_of(cfg, spark), inputs, settings, seed=cfg.seed, force=force)
    summary = dict(m.summary)
    summary.update({"rows_in": m.rows_in, "rows_out": m.rows_out})
    _print(stage, output, summary, m.skipped, m.seconds)
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:8]) + (" ..." if len(v) > 8 else "")
    if isinstance(v, list):
        return ", ".join(str(x) for x in v[:12]) + (" ..." if len(v) > 12 else "") if v else "none"
    return str(v)


def _print(stage: str, output: Path, summary: dict, skipped: bool, seconds: float) -> None:
    title = f"{stage} -> {output}" + (" (unchanged, skipped)" if skipped else f" ({seconds:.1f} s)")
    t = Table(title=title, show_header=False)
    for k, v in summary.items():
        if v is None or k in ("columns", "unseen", "buckets"):
            continue
        t.add_row(k, _fmt(v))
    console.print(t)


@features_app.command("ingest")
def ingest_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: data/, quarantine/ (and items/)"),
    raw: Optional[Path] = typer.Option(None, "--input", help="raw file or folder to read instead of dataset.path"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Raw TSV/CSV (plain or .gz) -> typed Parquet; malformed lines go to quarantine/ with file, line and reason."""
    from jobs.config import load_config

    cfg = load_config(config)
    inputs = {"raw": raw or cfg.dataset.path}
    if cfg.dataset.items is not None:
        inputs["items"] = cfg.dataset.items.path

    def fn_of(cfg, spark):
        from functools import partial

        from features.ingest import ingest

        return partial(ingest, dataset=cfg.dataset, cfg=cfg.features.ingest, spark=spark)

    _run("ingest", config, output, inputs, master, force, fn_of, "ingest")


@features_app.command("vocab")
def vocab_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Path = typer.Option(..., "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: vocab/, sizes.json (ctr: encoded/, schema.json)"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Frequency-ordered vocabularies on the train period; for ctr data, the encoded train/validation/test splits."""

    def fn_of(cfg, spark):
        from functools import partial

        from features.vocab import build_vocab

        return partial(build_vocab, dataset=cfg.dataset, cfg=cfg.features.vocab, spark=spark)

    _run("vocab", config, output, {"ingest": input}, master, force, fn_of, "vocab")


@features_app.command("sessions")
def sessions_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Path = typer.Option(..., "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: train|validation|test/, items/, item_vocab.json, split.json"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Time-ordered sessions (by session id, or by inactivity gap per user) with a cold-start-safe time split."""

    def fn_of(cfg, spark):
        from functools import partial

        from features.sessions import build_sessions

        return partial(build_sessions, dataset=cfg.dataset, cfg=cfg.features.sessions, spark=spark)

    _run("sessions", config, output, {"ingest": input}, master, force, fn_of, "sessions")


@features_app.command("quality")
def quality_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Path = typer.Option(..., "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: quality.json, quality.md, PNG plots"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Data-quality report: cardinality (exact + HLL), coverage, rare values, constant, leakage and drift per feature."""

    def fn_of(cfg, spark):
        from functools import partial

        from features.quality import quality_report

        return partial(quality_report, dataset=cfg.dataset, cfg=cfg.features.quality, spark=spark)

    _run("quality", config, output, {"ingest": input}, master, force, fn_of, "quality")


def register(app: typer.Typer) -> None:
    """Commands live in the shared `features` group (jobs/groups.py); nothing to add at the top."""

"""`sparserec features ingest | vocab | sessions | quality`: the Spark feature stages, each usable alone.

Each command is `sparserec run --only STAGE` on the config (`jobs.pipeline.run_only`): the same
stage function and fingerprint from `jobs/stages.py`, so `--output runs/<run>/<stage>` writes that
run's stage folder and `sparserec run` on the same config then skips it (and the command skips a
stage that `run` built). `--output` is the stage folder to write; `--input` replaces the stage's
input (the raw file for ingest, else the ingest folder; default `<output's parent>/ingest`), which
may live outside the run: the output is then current for `run` only while the input's content is
the same. A stage whose inputs and settings are unchanged is skipped, unless `--force`.

Example:
    $ sparserec features ingest --config configs/sample_ctr.yaml --output runs/r1/ingest
    $ sparserec features vocab --config configs/sample_ctr.yaml --input runs/r1/ingest --output runs/r1/vocab
    $ sparserec features quality --config configs/sample_ctr.yaml --input runs/r1/ingest --output runs/r1/quality
    $ sparserec features sessions --config configs/sample_sessions.yaml --input runs/s1/ingest --output runs/s1/sessions
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from features.errors import UserError
from jobs.groups import features_app

console = Console()

CONFIG_HELP = "a run config (YAML): the dataset and the features.* settings"
INPUT_HELP = "the ingest stage folder to read (holds data/); default: the ingest folder beside --output"
MASTER_HELP = "Spark master URL (default: the config's engine.spark.master)"
FORCE_HELP = "run even when the output is current (same inputs and settings)"


def load_stage_config(config: Path, master: Optional[str] = None, check_paths: bool = True):
    """The run config, with `--master` (engine settings: not part of any fingerprint) applied."""
    from jobs.config import load_config

    cfg = load_config(config, check_paths=check_paths)
    if master is not None:
        cfg.engine.spark = cfg.engine.spark.model_copy(update={"master": master})
    return cfg


def run_stage_command(stage: str, cfg, output: Path, inputs: dict[str, Path | None] | None = None, force: bool = False,
                      options: dict[str, Any] | None = None, trust_checkpoint: bool = False, quiet: bool = False,
                      option_names: dict[str, str] | None = None):
    """Run one stage of the registry into `output` as `run --only` does (skipped when current); print its summary.

    `inputs` name the stage's inputs given on the command line (key -> path, as `--<key>` unless
    `option_names` says otherwise); a missing one is a one-line error naming that option.
    """
    option_names = {"ingest": "input", "raw": "input", **(option_names or {})}
    from jobs.pipeline import run_only
    from jobs.stages import GRAPH

    for key, path in (inputs or {}).items():
        if path is not None and not Path(path).exists():
            where = "run `sparserec features ingest` first or fix the path" if key == "ingest" else "fix the path"
            what = "file" if key == "raw" else "folder"
            raise UserError(f"--{option_names.get(key, key)} {path}: {key} {what} not found; {where}.")
    output = Path(output)

    def on_event(name, outcome):
        if outcome is None and not quiet:
            console.print(f"{stage}: running into {output}", highlight=False)

    o = run_only(cfg, GRAPH, stage, output, inputs=inputs, options=options, force=force, on_event=on_event,
                 trust_checkpoint=trust_checkpoint)
    summary = {**o.summary, "rows_in": o.rows_in, "rows_out": o.rows_out}
    if not quiet:
        _print(stage, output, summary, o.status == "skipped", o.seconds)
    return o


def _ingest_input(given: Optional[Path]) -> dict[str, Path] | None:
    """`--input` as the stage's `ingest` input; without it the run's own `<run>/ingest` (beside `--output`)."""
    return {"ingest": given} if given is not None else None


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
    cfg = load_stage_config(config, master)
    run_stage_command("ingest", cfg, output, {"raw": raw} if raw is not None else None, force)


@features_app.command("vocab")
def vocab_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: vocab/, sizes.json (ctr: encoded/, schema.json)"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Frequency-ordered vocabularies on the train period; for ctr data, the encoded train/validation/test splits."""
    run_stage_command("vocab", load_stage_config(config, master), output, _ingest_input(input), force)


@features_app.command("sessions")
def sessions_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: train|validation|test/, items/, item_vocab.json, split.json"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Time-ordered sessions (by session id, or by inactivity gap per user) with a cold-start-safe time split."""
    run_stage_command("sessions", load_stage_config(config, master), output, _ingest_input(input), force)


@features_app.command("quality")
def quality_cmd(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    input: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
    output: Path = typer.Option(..., "--output", help="the stage folder to write: quality.json, quality.md, PNG plots"),
    master: Optional[str] = typer.Option(None, "--master", help=MASTER_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Data-quality report: cardinality (exact + HLL), coverage, rare values, constant, leakage and drift per feature."""
    run_stage_command("quality", load_stage_config(config, master), output, _ingest_input(input), force)


def register(app: typer.Typer) -> None:
    """Commands live in the shared `features` group (jobs/groups.py); nothing to add at the top."""

"""`sparserec run` (the whole pipeline) and `sparserec runs list|show` (past runs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from jobs.groups import runs_app
from jobs.stages import count_units, stage_names

console = Console()
_STAGES = ", ".join(stage_names())


def _fmt_rows(n: int | None, unit: str = "rows") -> str:
    """A count for the rows in / rows out columns; counts of something else say what (`39 features`)."""
    if not isinstance(n, int):
        return ""
    return f"{n:,}" if unit == "rows" else f"{n:,} {unit}"


def _key_figures(summary: dict) -> str:
    keys = ("auc", "val_auc", "logloss", "rows_quarantined", "features", "total_bytes", "recall@20", "report")
    parts = []
    for k in keys:
        if k in summary and not isinstance(summary[k], (dict, list)):
            v = summary[k]
            parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def run(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML), e.g. configs/sample_ctr.yaml"),
    run_id: str | None = typer.Option(None, help="run folder name under output_dir (default: the config's name, so a re-run continues it)"),
    from_stage: str | None = typer.Option(None, "--from", help=f"re-run this stage and every later one; stages: {_STAGES} (those that apply to the dataset kind)"),
    only: str | None = typer.Option(None, help=f"run only this stage (its inputs must exist); one of {_STAGES}"),
    force: bool = typer.Option(False, help="re-run stages even when inputs and config are unchanged"),
    wait_lock: bool = typer.Option(False, "--wait-lock", help="when another run holds this run folder, wait for it instead of stopping"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="resume from checkpoints in the run folder even when another user wrote them (they are unpickled: trust the author)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also show the engines' output (Spark, Ray, warnings) on the console; it always goes to <run>/logs/<stage>.log"),
) -> None:
    """Run the whole pipeline: feature builds, ranking, (Feast), planning, training, evaluation, report."""
    import re

    from features.errors import UserError
    from jobs.config import RUN_NAME_PATTERN, load_config
    from jobs.pipeline import run_pipeline
    from jobs.preflight import check_output_dir, preflight
    from jobs.stages import graph_for

    if run_id is not None and not re.fullmatch(RUN_NAME_PATTERN, run_id):
        raise UserError(f"--run-id {run_id}: not a plain folder name (the run folder is output_dir/run-id); use "
                        "letters, digits, '.', '_' and '-' only.")
    cfg = load_config(config)
    run_dir = cfg.output_dir / (run_id or cfg.name)
    preflight(cfg, str(config))
    check_output_dir(cfg, str(config), run_dir, create=True)
    console.print(f"[bold]sparserec run[/] {config} → {run_dir}")
    live = console.status("starting")

    def on_event(name, outcome):
        if outcome is None:
            live.update(f"stage [bold]{name}[/] running…")
            return
        colour = {"ran": "green", "skipped": "dim", "failed": "red"}[outcome.status]
        console.print(f"  [{colour}]{outcome.status:>7}[/] {name:<10} {outcome.seconds:7.1f}s  {_key_figures(outcome.summary)}")

    def on_wait(holder):
        text = f"waiting for pid {holder.get('pid', '?')} (started {holder.get('started_at', '?')}) to release {run_dir}"
        console.print(f"  {text}", highlight=False)
        live.update(text)

    with live:
        outcomes = run_pipeline(cfg, run_dir, graph_for(cfg), from_stage=from_stage, only=only, force=force,
                                on_event=on_event, wait_lock=wait_lock, on_wait=on_wait, capture_logs=True,
                                verbose=verbose, trust_checkpoint=trust_checkpoint)
    table = Table(title=f"run {run_dir.name}")
    for col in ("stage", "status", "seconds", "rows in", "rows out"):
        table.add_column(col, justify="right" if col not in ("stage", "status") else "left")
    for o in outcomes:
        unit_in, unit_out = count_units(o.stage)
        table.add_row(o.stage, o.status, f"{o.seconds:.1f}", _fmt_rows(o.rows_in, unit_in), _fmt_rows(o.rows_out, unit_out))
    console.print(table)
    report = run_dir / "report" / "report.md"
    if report.exists():
        console.print(f"report: [bold]{report}[/]")


@runs_app.command("list")
def runs_list(output_dir: Path = typer.Option(Path("runs"), help="folder holding the run folders")) -> None:
    """List past runs, newest first, with their complete stages."""
    from jobs.runs import list_runs, read_manifests

    table = Table(title=str(output_dir))
    for col in ("run", "stages", "last finished"):
        table.add_column(col)
    for r in list_runs(output_dir):
        ms = read_manifests(r)
        table.add_row(r.name, " ".join(m.stage for m in ms), ms[-1].started_at[:19] if ms else "")
    console.print(table)


@runs_app.command("show")
def runs_show(run: Path = typer.Argument(..., help="a run folder, e.g. runs/sample-ctr"),
              as_json: bool = typer.Option(False, "--json", help="print the manifests as JSON")) -> None:
    """Show one run: each stage's time, rows, summary figures, and where its report is."""
    from features.errors import UserError
    from jobs.runs import read_manifests, stale_stages

    if not run.is_dir():
        raise UserError(f"{run}: no such run folder; see `sparserec runs list`.")
    ms = read_manifests(run)
    stale = stale_stages(run)
    if as_json:
        typer.echo(json.dumps([{**m.__dict__, "stale": stale.get(m.stage)} for m in ms], indent=2, default=str))
        return
    table = Table(title=str(run))
    for col in ("stage", "state", "started", "seconds", "rows in", "rows out", "figures"):
        table.add_column(col)
    for m in ms:
        unit_in, unit_out = count_units(m.stage)
        state = f"[yellow]stale: {stale[m.stage]}[/]" if m.stage in stale else "current"
        table.add_row(m.stage, state, m.started_at[:19], f"{m.seconds:.1f}", _fmt_rows(m.rows_in, unit_in),
                      _fmt_rows(m.rows_out, unit_out), _key_figures(m.summary))
    console.print(table)
    if stale:
        console.print(f"[yellow]stale[/] (made from older inputs): {', '.join(stale)}; re-run the pipeline to refresh them.")
    if (run / "report" / "report.md").exists():
        note = " [yellow](stale: shows an earlier run's results)[/]" if "report" in stale else ""
        console.print(f"report: {run / 'report' / 'report.md'}{note}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)

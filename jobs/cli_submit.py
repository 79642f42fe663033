"""`sparserec submit` (Ray Jobs) and `sparserec schedule run-due|list` (cron-driven submissions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
schedule_app = typer.Typer(help="Scheduled runs: submit what is due (drive it from cron), list entries.",
                           no_args_is_help=True)
DEFAULT_SCHEDULE = Path(__file__).resolve().parent / "schedules.yaml"


def submit(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML) inside the working dir, e.g. configs/sample_ctr.yaml"),
    address: str = typer.Option("http://127.0.0.1:8265", envvar="RAY_API_SERVER_ADDRESS", help="Ray dashboard address of the cluster"),
    stage: str = typer.Option("run", help="run (whole pipeline) | features (Spark stages) | validate (check the config) | a stage name, e.g. train"),
    run_id: str | None = typer.Option(None, help="run folder name (default: the config's name)"),
    wait: bool = typer.Option(False, help="follow the job's logs and wait until it ends; exit 1 unless it SUCCEEDED"),
    timeout: float | None = typer.Option(None, help="with --wait: give up waiting after this many seconds"),
    working_dir: Path = typer.Option(None, help="folder uploaded as the job's working dir (default: this project)"),
    max_file_mb: float = typer.Option(20.0, help="files larger than this are not uploaded"),
    python: str = typer.Option("python", help="the interpreter on the cluster that has sparserec's dependencies"),
) -> None:
    """Submit a run (or one stage) to a Ray cluster with the Ray Jobs API; print the job id."""
    from jobs.submit import (PROJECT_ROOT, check_stage, follow_job, job_command, output_dir_warning, redact,
                             relative_config, submit_job)

    check_stage(stage)
    wd = (working_dir or PROJECT_ROOT).resolve()
    cmd = job_command(relative_config(config, wd), stage, run_id, python=python)
    warning = output_dir_warning(config, stage)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    with console.status(f"uploading {wd.name} and submitting to {redact(address)}"):
        job_id = submit_job(address, cmd, working_dir=wd, max_file_mb=max_file_mb)
    console.print(f"submitted [bold]{job_id}[/]: {cmd}", highlight=False, soft_wrap=True)
    typer.echo(job_id)
    if wait:
        status = follow_job(address, job_id, echo=lambda s: console.print(s, end="", markup=False, highlight=False, soft_wrap=True),
                            timeout_s=timeout)
        colour = "green" if status == "SUCCEEDED" else "red"
        console.print(f"job {job_id}: [{colour}]{status}[/]")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


@schedule_app.command("run-due")
def run_due_cmd(
    file: Path = typer.Option(DEFAULT_SCHEDULE, "--file", "-f", help="schedule file (YAML)"),
    now: str | None = typer.Option(None, help="pretend the time is this ISO time (UTC unless it says otherwise)"),
    dry_run: bool = typer.Option(False, help="only say what is due; submit nothing, change no state"),
    name: str | None = typer.Option(None, help="check only this entry"),
    as_json: bool = typer.Option(False, "--json", help="print the outcomes as JSON lines"),
) -> None:
    """Submit every entry whose cron time passed since it was last checked (missed times run once)."""
    from jobs.schedule import outcome_dict, parse_now, run_due

    outcomes = run_due(file, now=parse_now(now), dry_run=dry_run, only=name)
    for o in outcomes:
        if as_json:
            typer.echo(json.dumps(outcome_dict(o)))
        else:
            extra = f" ({o.fires} fire times collapsed)" if o.fires > 1 else ""
            job = f" job {o.job_id}" if o.job_id else ""
            typer.echo(f"{o.name}: {o.action}{job}{extra}{' - ' + o.detail if o.detail else ''}")
    if any(o.action == "failed" for o in outcomes):
        sys.exit(1)


@schedule_app.command("list")
def list_cmd(
    file: Path = typer.Option(DEFAULT_SCHEDULE, "--file", "-f", help="schedule file (YAML)"),
    now: str | None = typer.Option(None, help="compute the next fire time from this ISO time"),
) -> None:
    """List the entries with their last and next fire times."""
    from jobs.schedule import describe, parse_now

    table = Table(title=str(file))
    cols = ("name", "cron", "job", "address", "last_fire", "last_action", "next")
    for c in cols:
        table.add_column(c)
    for row in describe(file, parse_now(now)):
        table.add_row(*(str(row[c] or "") for c in cols), style=None if row["enabled"] else "dim")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.add_typer(schedule_app, name="schedule")

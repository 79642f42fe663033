"""`sparserec runs compare RUN [RUN ...]`: finished runs side by side (table + AUC vs bytes plot).

Example:
    $ sparserec runs compare runs/sample-ctr runs/sample-ctr-int4 --output runs/.compare
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from features.errors import UserError
from jobs.groups import runs_app

console = Console(width=200)


@runs_app.command("compare")
def runs_compare(runs: list[Path] = typer.Argument(..., help="run folders, e.g. runs/a runs/b"),
                 output: Path = typer.Option(Path("runs/.compare"), help="folder for compare.md, compare.json, auc_vs_bytes.png")) -> None:
    """Compare runs: data, plan bytes, method per table, DSL mode, val/test AUC, log loss, ECE, examples/s,
    peak RSS, seconds per stage; and a PNG of AUC vs embedding bytes."""
    from pipelines.ctr.run_compare import COLUMNS, format_cell, compare_runs, write_comparison

    missing = [r for r in runs if not r.is_dir()]
    if missing:
        raise UserError(f"{missing[0]}: no such run folder; see `sparserec runs list`.")
    table = Table(title="runs compared")
    for c in COLUMNS:
        table.add_column(c, overflow="fold")
    for r in compare_runs(runs):
        table.add_row(*[format_cell(r.get(c)) for c in COLUMNS])
    console.print(table)
    paths = write_comparison(runs, output)
    console.print(f"table: {paths['table']}  plot: {paths['plot']}")


def register(app: typer.Typer) -> None:
    """`runs compare` lives in the `runs` group (jobs/groups.py), added by its decorator."""

"""The `sparserec` command line: one CLI for every stage and the whole run.

Each layer's commands live in their own `jobs/cli_*.py` module and are added here as sub-apps.
A user mistake (`UserError`) is printed as one line on stderr with exit status 2; never a traceback.

Example:
    $ sparserec generate ctr --rows 20000 --seed 0 --output data/sample/ctr
    $ sparserec config validate configs/sample_ctr.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError
from jobs.groups import GROUPS

app = typer.Typer(help="sparserec: raw logs to trained, memory-budgeted recommender models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
config_app = typer.Typer(help="Check and show run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)
console = Console(stderr=True)


@app.command()
def generate(
    kind: str = typer.Argument(..., help="ctr | sessions | interactions"),
    rows: int = typer.Option(20_000, help="number of rows (events) to write"),
    seed: int = typer.Option(0, help="random seed; the same seed gives the same bytes"),
    output: Path = typer.Option(..., help="folder to write the raw files and truth.json into"),
    gzip: bool = typer.Option(False, help="gzip the raw files"),
    bad_rows: int = typer.Option(0, help="ctr only: malformed lines to plant (for the quarantine)"),
) -> None:
    """Generate a realistic raw dataset with its ground truth (truth.json) beside it."""
    from features.synthetic import generate as gen

    extra = {"bad_rows": bad_rows} if bad_rows else {}
    if bad_rows and kind != "ctr":
        raise UserError("--bad-rows is only offered for the 'ctr' kind.")
    with console.status(f"generating {kind} ({rows:,} rows)"):
        truth = gen(kind, rows=rows, seed=seed, output=output, gzip=gzip, **extra)
    typer.echo(f"wrote {output / truth['file']} ({truth['rows']:,} rows) and {output / 'truth.json'}")


@config_app.command("validate")
def config_validate(file: Path = typer.Argument(..., help="a run config (YAML)")) -> None:
    """Check a config: unknown keys, wrong types, missing files, header columns, Spark settings, output folder."""
    from jobs.config import load_config
    from jobs.preflight import preflight

    cfg = load_config(file)
    preflight(cfg, str(file))
    typer.echo(f"{file}: ok ({cfg.dataset.kind} dataset '{cfg.dataset.name}', seed {cfg.seed})")


@config_app.command("show")
def config_show(file: Path = typer.Argument(..., help="a run config (YAML)")) -> None:
    """Print the resolved config with every default filled in (YAML)."""
    import yaml

    from jobs.config import load_config

    cfg = load_config(file, check_paths=False)
    typer.echo(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))


def _register_subapps() -> None:
    """Add the layers' command groups; each module defines `register(app)`."""
    import importlib
    import pkgutil

    import jobs

    for mod in sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if m.name.startswith("cli_")):
        importlib.import_module(f"jobs.{mod}").register(app)


_register_subapps()


def main() -> None:
    """Console-script entry point: user errors become one line and exit status 2."""
    try:
        app(standalone_mode=True)
    except UserError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

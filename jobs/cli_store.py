"""Feast store commands: `features aggregates | register | materialize | training-set`, `serve-features`.

For ctr data `aggregates` and `register` are the run's `aggregates` and `store` stages (`run --only`,
`jobs.pipeline.run_only`: same function and fingerprint, with `store.enabled` taken as true):
`--output runs/<run>/<stage>` writes that run's stage folder, skipped when current, and `register`
also materializes, as the run's store stage does. For session data they write `--output` through
`jobs.runs.run_stage` (atomic folder + manifest) with their own settings (not a run stage).
`training-set` is not a run stage either. `materialize` fills the online store inside an existing
store folder, in place (Feast's registry and SQLite file live there).

Example:
    $ sparserec features aggregates --config configs/sample_ctr.yaml --ingest runs/r1/ingest --output runs/r1/aggregates
    $ sparserec features register --config configs/sample_ctr.yaml --aggregates runs/r1/aggregates \\
          --vocab runs/r1/vocab --rank runs/r1/rank --output runs/r1/store
    $ sparserec features materialize --store runs/r1/store
    $ sparserec features training-set --store runs/r1/store --service dlrm --output runs/r1/feast_training_set
    $ sparserec serve-features --store runs/r1/store --entity user=0a1b2c3d
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError
from jobs.groups import features_app

console = Console()


def _run(output: Path, stage_fn, inputs: dict[str, Path], config, seed: int | None = None):
    from jobs.runs import run_stage

    output = Path(output)
    for name, path in inputs.items():
        if not Path(path).exists():
            raise UserError(f"--{name} {path}: folder not found; run the stage that writes it first.")
    return run_stage(output.parent, output.name, stage_fn, inputs, config, seed=seed)


def _spark(cfg):
    from features.spark import spark_session

    return spark_session(cfg.engine.spark)


@features_app.command("aggregates")
def aggregates_cmd(
    config: Path = typer.Option(..., help="run config (YAML); its store.windows_days sets the windows"),
    ingest: Path = typer.Option(..., help="the ingest stage folder (holds data/)"),
    output: Path = typer.Option(..., help="stage folder to write, e.g. runs/r1/aggregates"),
) -> None:
    """Per-user / per-item counts and CTRs over time windows, from events strictly before each event."""
    from functools import partial

    from features.aggregates import aggregates
    from jobs.config import load_config

    cfg = load_config(config, check_paths=False)
    if cfg.dataset.kind == "ctr":
        from jobs.cli_features import run_stage_command

        cfg.store.enabled = True
        o = run_stage_command("aggregates", cfg, output, {"ingest": ingest}, quiet=True)
        console.print(f"{'skipped (unchanged)' if o.status == 'skipped' else 'wrote'} {output}: {o.rows_out:,} rows, "
                      f"{len(o.summary['columns'])} aggregate columns", highlight=False)
        return
    with console.status("aggregates (Spark)"):
        fn = partial(aggregates, dataset=cfg.dataset, windows_days=cfg.store.windows_days, spark=_spark(cfg))
        m = _run(output, fn, {"ingest": ingest}, {"dataset": cfg.dataset.model_dump(mode="json"),
                                                  "windows_days": cfg.store.windows_days})
    console.print(f"{'skipped (unchanged)' if m.skipped else 'wrote'} {output}: {m.rows_out:,} rows, "
                  f"{len(m.summary['columns'])} aggregate columns", highlight=False)
    console.print(f"to rank them, rank {output} as the ingest folder with the dense roles extended "
                  "(features.aggregates.with_aggregate_roles)", highlight=False)


@features_app.command("register")
def register_cmd(
    config: Path = typer.Option(..., help="run config (YAML): dataset roles and the store section"),
    aggregates: Path = typer.Option(..., help="the aggregates stage folder"),
    output: Path = typer.Option(..., help="store folder to write, e.g. runs/r1/store"),
    vocab: Path = typer.Option(None, help="vocab stage folder: store vocabulary ids instead of raw values (the run's store stage gives it)"),
    rank: Path = typer.Option(None, help="rank stage folder: only the features its feature_spec.json selects (the run's store stage gives it)"),
    ingest: Path = typer.Option(None, help="ingest stage folder (session data: its items/ table)"),
) -> None:
    """Write the feature views' sources, feature_store.yaml, and apply the generated Feast definitions
    (ctr data: the run's store stage, which also materializes the online store)."""
    from functools import partial

    from features.store.repo import register
    from jobs.config import load_config

    cfg = load_config(config, check_paths=False)
    inputs = {k: v for k, v in {"aggregates": aggregates, "vocab": vocab, "rank": rank, "ingest": ingest}.items() if v}
    if cfg.dataset.kind == "ctr":  # the run's store stage: register and materialize
        from jobs.cli_features import run_stage_command

        cfg.store.enabled = True
        o = run_stage_command("store", cfg, output, {"vocab": None, "rank": None, **inputs}, quiet=True)
        s = o.summary
        changes = "inputs and config unchanged, not re-applied" if o.status == "skipped" else f"{len(s['changes'])} registry change(s)"
        console.print(f"{output}: views {', '.join(s['views'])}; services {', '.join(s['services'])}; {changes}; "
                      f"materialized until {s.get('materialized_until')}", highlight=False)
        return
    with console.status("writing sources (Spark) and applying definitions (Feast)"):
        fn = partial(register, dataset=cfg.dataset, cfg=cfg.store, spark=_spark(cfg))
        m = _run(output, fn, inputs, {"dataset": cfg.dataset.model_dump(mode="json"),
                                      "store": cfg.store.model_dump(mode="json")})
    s = m.summary
    changes = "inputs and config unchanged, not re-applied" if m.skipped else f"{len(s['changes'])} registry change(s)"
    console.print(f"{output}: views {', '.join(s['views'])}; services {', '.join(s['services'])}; {changes}",
                  highlight=False)


@features_app.command("materialize")
def materialize_cmd(
    store: Path = typer.Option(..., help="store folder written by `features register`"),
    end: str = typer.Option(None, help="materialize up to this time (ISO 8601, UTC); default: just after the newest event"),
) -> None:
    """Load the latest feature values into the online store (incremental after the first call)."""
    from features.store.repo import materialize

    try:
        end_at = datetime.fromisoformat(end) if end else None
    except ValueError:
        raise UserError(f"--end {end!r}: not an ISO 8601 time; e.g. --end 2023-11-21T00:00:00") from None
    with console.status("materializing"):
        s = materialize(store, end_at)
    console.print(f"materialized {', '.join(s['views'])} up to {s['end']} "
                  f"(first time: {', '.join(s['first_time']) or '-'}; incremental: {', '.join(s['incremental']) or '-'})",
                  highlight=False)


@features_app.command("training-set")
def training_set_cmd(
    store: Path = typer.Option(..., help="store folder written by `features register`"),
    output: Path = typer.Option(..., help="stage folder to write (encoded/ splits + schema.json)"),
    service: str = typer.Option("dlrm", help="feature service (one per model)"),
    vocab: Path = typer.Option(None, help="vocab stage folder: reuse its split cut times"),
    validation_share: float = typer.Option(0.1, help="share of events (by time) before the test period"),
    test_share: float = typer.Option(0.1, help="latest share of events"),
) -> None:
    """Point-in-time training set through Feast, in the trainer's encoded layout."""
    from functools import partial

    from features.store.training_set import build_training_set

    inputs = {"store": store, **({"vocab": vocab} if vocab else {})}
    with console.status(f"get_historical_features ({service})"):
        fn = partial(build_training_set, service=service, validation_share=validation_share, test_share=test_share)
        m = _run(output, fn, inputs, {"service": service, "validation_share": validation_share, "test_share": test_share})
    rows = m.summary["rows"]
    console.print(f"wrote {output}: train {rows['train']:,}, validation {rows['validation']:,}, test {rows['test']:,} rows",
                  highlight=False)


def serve_features(
    store: Path = typer.Option(..., help="store folder written by `features register` (materialized)"),
    entity: str = typer.Option(..., help="NAME=KEY, e.g. user=42 (entities: user, item, session, event)"),
    service: str = typer.Option(None, help="only the features of this feature service"),
) -> None:
    """Print the online feature vector of one entity key (latest materialized values)."""
    from rich.table import Table

    from features.store.online import online_features, parse_entity

    name, key = parse_entity(entity)
    values = online_features(store, name, key, service=service)
    table = Table(title=f"{name}={key}")
    table.add_column("feature")
    table.add_column("value", justify="right")
    for feat, val in values.items():
        table.add_row(feat, "missing" if val is None else (f"{val:.6g}" if isinstance(val, float) else str(val)))
    console.print(table)


def register(app: typer.Typer) -> None:
    """`serve-features` is a top-level command; the rest live in the `features` group."""
    app.command("serve-features")(serve_features)

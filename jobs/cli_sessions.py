"""`sparserec sessions ...`: train and evaluate session models (M2TRec and baselines).

`sessions train` is the run's session `train` stage (`run --only train`, skipped when current);
`prepare*` and `evaluate` are not run stages: they rebuild `--output` on every call.

Example:
    $ sparserec sessions prepare --sequences ../shared/data/amazon-toys/Toys_and_Games.txt.gz \
        --items ../shared/data/amazon-toys/Toys_and_Games_item2attributes.json.gz --cold-share 0.1 --output runs/toys/sessions
    $ sparserec sessions prepare-synthetic --events data/sample/sessions/sessions.csv.gz \
        --items data/sample/sessions/items.csv.gz --output runs/sess/sessions
    $ sparserec sessions train --config configs/sample_sessions.yaml --sessions runs/sess/sessions --output runs/sess/m2trec
    $ sparserec sessions evaluate --sessions runs/sess/sessions --model runs/sess/m2trec --output runs/sess/report
"""

from __future__ import annotations

from pathlib import Path

import typer

from features.errors import UserError

sessions_app = typer.Typer(help="Session models: M2TRec, SASRec, GRU4Rec, popularity; prepare data, train, evaluate side by side.",
                           no_args_is_help=True)


def _run(output: Path, fn, inputs: dict[str, Path], config: object, seed: int | None = None):
    """Run a stage into `output` atomically (a manifest beside the files), via jobs/runs.py."""
    from jobs.runs import run_stage

    output = output.resolve()
    return run_stage(output.parent, output.name, fn, inputs, config, seed=seed, force=True)


@sessions_app.command("prepare-synthetic")
def prepare_synthetic(
    events: Path = typer.Option(..., help="sessions.csv(.gz) from `sparserec generate sessions`"),
    items: Path = typer.Option(..., help="items.csv(.gz) beside it"),
    output: Path = typer.Option(..., help="folder for the sessions-stage layout"),
    categorical: str = typer.Option(None, help="comma-separated single-valued attribute columns of the item table "
                                               "(default: as truth.json beside it declares, else every column but item_id)"),
    multi_valued: str = typer.Option(None, help="comma-separated multi-valued (space-separated values) attribute columns"),
) -> None:
    """Write the sessions-stage layout from generated CSV files with pandas (no Spark)."""
    from pipelines.sessions.layout import declared_item_columns, synthetic_layout

    for p in (events, items):
        if not p.exists():
            raise UserError(f"{p}: file not found; generate it with `sparserec generate sessions --output DIR`.")
    cat, multi = declared_item_columns(items)
    if categorical is not None or multi_valued is not None:
        cat = [c.strip() for c in (categorical or "").split(",") if c.strip()]
        multi = [c.strip() for c in (multi_valued or "").split(",") if c.strip()]

    def stage(inputs, out):
        return synthetic_layout(inputs["events"], inputs["items"], out, categorical=cat, multi_valued=multi)

    m = _run(output, stage, {"events": events, "items": items},
             {"kind": "synthetic", "categorical": cat, "multi_valued": multi})
    typer.echo(f"wrote {output} ({m.summary.get('sessions')})")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


@sessions_app.command("prepare")
def prepare(
    sequences: Path = typer.Option(..., help="one line per user/session `user i1 i2 ...` (RecBole/S3-Rec), or an event "
                                             "log CSV/TSV with a header (session or user, item, time); .gz is fine"),
    output: Path = typer.Option(..., help="folder for the sessions-stage layout (what `sessions train` reads)"),
    items: Path = typer.Option(None, help="item attributes: JSON map item -> list of attribute ids "
                                          "(S3-Rec *_item2attributes.json) or a CSV/TSV table with a header"),
    protocol: str = typer.Option("leave-one-out", help="leave-one-out (last item test, second to last validation) "
                                                       "| time (sessions by start time; needs event times)"),
    cold_share: float = typer.Option(0.0, help="share of items held out of training (seeded): cold targets"),
    max_length: int = typer.Option(None, help="keep the last N items of every written sequence"),
    seed: int = typer.Option(0, help="seed for picking the cold items"),
    validation_share: float = typer.Option(0.1, help="--protocol time: share of sessions for validation"),
    test_share: float = typer.Option(0.1, help="--protocol time: share of sessions for test"),
    categorical: str = typer.Option(None, help="attribute table: comma-separated single-valued columns (default: detected)"),
    multi_valued: str = typer.Option(None, help="attribute table: comma-separated multi-valued columns (default: detected)"),
    separator: str = typer.Option("|", help="attribute table: separator of the values of a multi-valued cell"),
    session_column: str = typer.Option(None, help="event log: the session (or user) column"),
    item_column: str = typer.Option(None, help="event log: the item column"),
    time_column: str = typer.Option(None, help="event log: the time column (numbers or ISO times)"),
    user_column: str = typer.Option(None, help="event log: a user column beside the session column (kept as user_id)"),
) -> None:
    """Public sequence data (sequence lines or an event log, item attribute map or table) as the sessions layout:
    bad rows quarantined with reasons, counts reconciled (import.json)."""
    from pipelines.sessions.prepare import ImportConfig, import_sessions

    for p, what in ((sequences, "--sequences"), (items, "--items")):
        if p is not None and not p.is_file():
            raise UserError(f"{p}: file not found; pass an existing file to {what}.")
    cfg = ImportConfig(protocol=protocol, cold_share=cold_share, max_length=max_length, seed=seed,
                       validation_share=validation_share, test_share=test_share, categorical=_names(categorical),
                       multi_valued=_names(multi_valued), separator=separator,
                       columns={k: v for k, v in (("session", session_column), ("item", item_column),
                                                  ("time", time_column), ("user", user_column)) if v is not None})
    cfg.check()
    inputs = {"sequences": sequences, **({"items": items} if items is not None else {})}

    def stage(inp, out):
        return import_sessions(inp["sequences"], inp.get("items"), out, cfg)

    from dataclasses import asdict

    m = _run(output, stage, inputs, asdict(cfg), seed)
    s = m.summary
    typer.echo(f"read {m.rows_in} rows ({s['format']}): {s['rows_ok']} ok, {s['rows_quarantined']} quarantined "
               f"{s['quarantine_reasons']}; {s['sequences_used']} sequences used, {s['sequences_too_short']} too short; "
               f"{s['items']} items ({s['cold_items']} cold, {s['items_without_attributes']} without attributes); "
               f"sessions {s['sessions']}; wrote {output}")


@sessions_app.command("prepare-movielens")
def prepare_movielens(
    ml100k: Path = typer.Option(..., help="the MovieLens-100K folder (u.data, u.item): GroupLens' original files "
                                          "or the copy with header rows"),
    output: Path = typer.Option(..., help="folder for the sessions-stage layout"),
    holdout: int = typer.Option(3, help="last items per user held out as test targets"),
    cold_share: float = typer.Option(0.1, help="share of movies removed from training (cold items)"),
    seed: int = typer.Option(0, help="seed for picking the cold movies"),
) -> None:
    """MovieLens-100K as per-user time-ordered sequences with genres and release year as metadata."""
    from pipelines.sessions.layout import movielens_layout

    if not (ml100k / "u.data").is_file():
        raise UserError(f"{ml100k}: u.data not found; pass the MovieLens-100K folder (../shared/data/ml-100k).")

    def stage(inputs, out):
        return movielens_layout(inputs["ml100k"], out, holdout=holdout, cold_share=cold_share, seed=seed)

    m = _run(output, stage, {"ml100k": ml100k}, {"holdout": holdout, "cold_share": cold_share}, seed)
    typer.echo(f"wrote {output} ({m.summary.get('sessions')})")


@sessions_app.command("train")
def train(
    config: Path = typer.Option(..., help="run config (YAML); its `training` section is used"),
    sessions: Path = typer.Option(..., help="output folder of the sessions stage"),
    output: Path = typer.Option(..., help="folder to write model.pt, model.json, metrics.json into (runs/<run>/train: that run's train stage)"),
    model: str = typer.Option(None, help="override training.model.name: m2trec | sasrec | gru4rec | popularity"),
    epochs: int = typer.Option(None, help="override training.epochs"),
    positions: int = typer.Option(1, help="test: predict each of the last N items of a session"),
    single_process: bool = typer.Option(False, "--single-process",
                                        help="train in this process instead of Ray Train (training.ray.single_process; debugging)"),
    force: bool = typer.Option(False, "--force", help="train again even when inputs and settings are unchanged"),
) -> None:
    """Train one session model (Ray Train with training.ray.num_workers workers, or in this process) and
    evaluate it on the test split (progress per epoch).

    The run's session `train` stage (`run --only train`, `jobs.pipeline.run_only`): same function and
    fingerprint, so `--output runs/<run>/train` with that run's sessions folder is current for
    `sparserec run` (and skipped here when it is current, unless `--force`). `--model`, `--epochs`
    and `--single-process` override the config's `training` section; `--positions` is a stage option.
    """
    from jobs.cli_features import run_stage_command
    from jobs.config import load_config

    cfg = load_config(config, check_paths=False)
    if cfg.dataset.kind == "ctr":
        raise UserError(f"{config}: dataset.kind is 'ctr'; `sessions train` trains session models, use `sparserec train` "
                        "for CTR models or a sessions/interactions config.")
    tc = cfg.training
    if model:
        from pipelines.sessions.train import SESSION_MODELS

        if model not in SESSION_MODELS:
            raise UserError(f"--model '{model}': not a session model; use one of {', '.join(SESSION_MODELS)}.")
        tc.model.name = model
    if epochs:
        tc.epochs = epochs
    if single_process:
        tc.ray.single_process = True
    o = run_stage_command("train", cfg, output.resolve(), {"sessions": sessions}, force=force, quiet=True,
                          options={"positions": positions} if positions != 1 else None)
    t = o.summary["test"]
    done = "unchanged, skipped" if o.status == "skipped" else "wrote"
    typer.echo(f"{tc.model.name}: test Recall@20 {t.get('recall@20', float('nan')):.4f} "
               f"NDCG@20 {t.get('ndcg@20', float('nan')):.4f} on {t['n']} targets; {done} {output}")


@sessions_app.command("evaluate")
def evaluate(
    sessions: Path = typer.Option(..., help="output folder of the sessions stage"),
    model: list[Path] = typer.Option(..., help="a folder written by `sessions train` (repeat for several)"),
    output: Path = typer.Option(..., help="folder for report.md, metrics.json, recall.png"),
    positions: int = typer.Option(1, help="predict each of the last N items of a test session"),
) -> None:
    """Evaluate trained models side by side: Recall/MRR/NDCG@10,20 overall, cold and sparse items."""
    from pipelines.sessions.evaluate import evaluate_stage

    inputs = {"sessions": sessions}
    for folder in model:
        inputs[folder.name] = folder
    m = _run(output, lambda i, o: evaluate_stage(i, o, positions=positions), inputs, {"positions": positions})
    typer.echo((output / "report.md").read_text())
    typer.echo(f"wrote {output} ({len(m.summary['models'])} models)")


def register(app: typer.Typer) -> None:
    app.add_typer(sessions_app, name="sessions")

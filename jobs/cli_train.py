"""`sparserec train`: train and evaluate a CTR model (DLRM / DCN-v2 / LR) on Ray Train or in one process.

Example:
    $ sparserec train --config configs/sample_ctr.yaml
    $ sparserec train --config configs/sample_ctr.yaml --encoded runs/r1/vocab --plan runs/r1/plan/embedding_plan.json --output runs/r1
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError

console = Console(stderr=True)
_TRAIN_NEEDS = ("ingest", "vocab", "rank", "plan", "train")


def _vocab_dir(path: Path) -> Path:
    """The vocab stage folder (holding encoded/ and schema.json), given it or its encoded/ folder."""
    for cand in (path, path.parent):
        if (cand / "schema.json").exists() and (cand / "encoded").is_dir():
            return cand
    raise UserError(f"--encoded {path}: no schema.json and encoded/ there; give the 'vocab' stage folder (runs/<id>/vocab)")


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML); its training/embeddings sections are used"),
    encoded: Path | None = typer.Option(None, help="the vocab stage folder (encoded/ + schema.json); default: run the feature stages"),
    plan: Path | None = typer.Option(None, help="embedding_plan.json (or the plan stage folder); needed with --encoded"),
    output: Path | None = typer.Option(None, help="run folder to write the 'train' stage into (default: <output_dir>/<name>)"),
    single_process: bool = typer.Option(False, "--single-process", help="run the loop in this process instead of Ray (debugging)"),
    force: bool = typer.Option(False, help="train again even when inputs and config are unchanged"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="resume from checkpoints in the run folder even when another user wrote them (they are unpickled: trust the author)"),
) -> None:
    """Train and evaluate a CTR model; writes checkpoints, model/, metrics.json, report.md, model_card.md.

    With only --config, it is `sparserec run` up to train (ingest, vocab, rank, plan, train), skipping
    any stage whose output is current. With --encoded and --plan, it is the run's train stage
    (`run --only train`) on those outputs, written to `<output>/train`: current for `sparserec run`
    when they are that run's vocab and plan folders. `--single-process` sets training.ray.single_process.
    """
    from jobs.config import load_config

    cfg = load_config(config, check_paths=encoded is None)
    if cfg.dataset.kind != "ctr":
        raise UserError(f"{config}: dataset.kind is '{cfg.dataset.kind}'; `sparserec train` trains CTR models, "
                        "use `sparserec run --config` for session models")
    if single_process:  # assigned level by level so <run>/config.yaml (the keys set) keeps it
        cfg.training.ray = cfg.training.ray.model_copy(update={"single_process": True})
        cfg.training = cfg.training
    run_dir = output or cfg.output_dir / cfg.name
    if (encoded is None) != (plan is None):
        raise UserError("give both --encoded (the vocab stage folder) and --plan (embedding_plan.json), or neither "
                        "(then the feature and plan stages run first)")
    if encoded is None:
        from jobs.pipeline import run_pipeline
        from jobs.preflight import preflight
        from jobs.stages import GRAPH

        preflight(cfg, str(config))  # header, roles, Spark settings, output folder: before Spark starts

        graph = [s for s in GRAPH if s.name in _TRAIN_NEEDS]
        for o in run_pipeline(cfg, run_dir, graph, from_stage="train" if force else None, trust_checkpoint=trust_checkpoint,
                              capture_logs=True):  # engine output to <run>/logs/<stage>.log, as `run` does
            console.print(f"  {o.status:>7} {o.stage:<8} {o.seconds:7.1f}s")
    else:
        from jobs.cli_features import run_stage_command

        vocab = _vocab_dir(encoded)
        if not plan.exists():
            raise UserError(f"--plan {plan}: not found; give embedding_plan.json written by the 'plan' stage")
        o = run_stage_command("train", cfg, run_dir / "train", {"vocab": vocab, "plan": plan}, force=force,
                              trust_checkpoint=trust_checkpoint, quiet=True)
        from jobs.config import save_config

        save_config(cfg, run_dir)  # <run>/config.yaml, as `run` keeps it: `predict --run` reads it
        console.print(f"  {o.status:>7} train    {o.seconds:7.1f}s  {o.summary}")
    summary_dir = run_dir / "train"
    typer.echo(f"trained: {summary_dir / 'metrics.json'}, {summary_dir / 'report.md'}, {summary_dir / 'model_card.md'}")


def register(app: typer.Typer) -> None:
    """Add `sparserec train` at the top level."""
    app.command("train")(train_cmd)

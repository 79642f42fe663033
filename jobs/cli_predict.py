"""`sparserec predict`: score new raw rows with a finished run's exported model.

Example:
    $ sparserec predict --run runs/sample-ctr --config configs/sample_ctr.yaml --input data/day2.tsv.gz --output out/day2
    $ sparserec predict --run runs/sample-ctr --config configs/sample_ctr.yaml --input day2/ --output out/day2-int4 --serving int4
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError

console = Console(stderr=True)
CONFIG_SNAPSHOTS = ("config.yaml", "config.json", "run.yaml")


def run_dataset(run: Path, config: Path | None):
    """The dataset declaration (format and column roles) of `run`: from `--config`, or a config the run kept."""
    from jobs.config import load_config

    if config is None:
        config = next((run / n for n in CONFIG_SNAPSHOTS if (run / n).exists()), None)
        if config is None:
            raise UserError(f"--run {run}: the run folder keeps no config ({', '.join(CONFIG_SNAPSHOTS)}); pass the "
                            "run's config with --config FILE so the input is read with its format and column roles.")
    cfg = load_config(config, check_paths=False)
    if cfg.dataset.kind != "ctr":
        raise UserError(f"{config}: dataset.kind is '{cfg.dataset.kind}'; predict scores CTR runs.")
    return cfg


def predict_cmd(
    run: Path = typer.Option(..., "--run", help="a finished CTR run folder (train/model/, vocab/)"),
    input_path: Path = typer.Option(..., "--input", help="raw rows: a file or a folder of files, in the run's format"),
    output: Path = typer.Option(..., "--output", help="new folder for predictions/, quarantine/, summary.json (+ metrics.json, report.md)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="the run's config (format and column roles of the input)"),
    serving: str = typer.Option("as-trained", help="as-trained (trained rows fp32 on FBGEMM: the run's test AUC) | fp32 | "
                                "fp16 | int8 | int4 (every table) | exported (embeddings.pt as planned) | eager (PyTorch)"),
    label: str | None = typer.Option(None, help="the input's label column (default: the dataset's label, when present)"),
    batch_size: int = typer.Option(4096, min=1, help="rows per scoring batch"),
    workers: int = typer.Option(2, min=1, help="model actors on Ray"),
    single_process: bool = typer.Option(False, "--single-process", help="score in this process, without Ray"),
) -> None:
    """Score raw rows with a run's model (its ingest rules, vocabularies, served embeddings); with a label,
    also metrics.json and report.md (AUC, log loss, calibration, slices)."""
    from features.spark import spark_session
    from pipelines.ctr.predict import PredictConfig, predict
    from pipelines.ctr.serving import SERVING_MODES

    if serving not in SERVING_MODES:
        raise UserError(f"--serving {serving}: unknown; use one of {', '.join(SERVING_MODES)}")
    if not (run / "train" / "model" / "model.json").exists():
        raise UserError(f"--run {run}: no train/model/model.json; give a run folder whose 'train' stage finished.")
    if not input_path.exists():
        raise UserError(f"--input {input_path}: no such file or folder.")
    cfg = run_dataset(run, config)
    pcfg = PredictConfig(serving=serving, label=label, batch_size=batch_size, workers=workers,
                         single_process=single_process, ray_address=cfg.training.ray.address)
    with console.status("starting Spark"):
        spark = spark_session(cfg.engine.spark)
    with console.status(f"scoring {input_path} with {run.name} ({serving})"):
        s = predict(run, input_path, output, cfg.dataset, pcfg, spark)
    typer.echo(f"{s['rows_in']:,} rows in: {s['rows_scored']:,} scored, {s['rows_quarantined']:,} quarantined "
               f"→ {output / 'predictions'}")
    if "metrics" in s:
        m = s["metrics"]
        typer.echo(f"AUC {m['auc']:.4f}  log loss {m['log_loss']:.4f}  ECE {m['ece']:.4f} → {output / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)

"""`sparserec predict`: score new raw rows with a finished run's exported model.

The input is read with the format and column roles of the config the run kept (`<run>/config.yaml`,
written by `sparserec run`); `--config FILE` reads another one instead.

Example:
    $ sparserec predict --run runs/sample-ctr --input data/day2.tsv.gz --output out/day2
    $ sparserec predict --run runs/sample-ctr --input day2/ --output out/day2-int4 --serving int4
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from features.errors import UserError

console = Console(stderr=True)


def run_dataset(run: Path, config: Path | None):
    """The run config of `run` (its dataset's format and column roles): `--config`, else `<run>/config.yaml`."""
    from jobs.config import CONFIG_SNAPSHOT, load_config

    if config is None:
        config = run / CONFIG_SNAPSHOT
        if not config.exists():
            raise UserError(f"--run {run}: no {CONFIG_SNAPSHOT} (runs before this version kept none); re-run "
                            "`sparserec run --config FILE` once (finished stages are skipped, it writes the file) "
                            "or pass the run's config with --config FILE.")
    cfg = load_config(config, check_paths=False)
    if cfg.dataset.kind != "ctr":
        raise UserError(f"{config}: dataset.kind is '{cfg.dataset.kind}'; predict scores CTR runs.")
    return cfg


def predict_cmd(
    run: Path = typer.Option(..., "--run", help="a finished CTR run folder (train/model/, vocab/)"),
    input_path: Path = typer.Option(..., "--input", help="raw rows: a file or a folder of files, in the run's format"),
    output: Path = typer.Option(..., "--output", help="new folder for predictions/, quarantine/, summary.json (+ metrics.json, report.md)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="a config whose dataset format and column roles read "
                                       "the input (default: the run's own config.yaml)"),
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

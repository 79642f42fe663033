"""Batch scoring of new raw rows with a finished run's exported model: `sparserec predict`.

raw rows ── ingest rules (Spark, `predict_input`) ──> parsed/ + quarantine/
parsed/  ── Ray Data `map_batches(Scorer, compute=ActorPoolStrategy(size=workers))` (or one process) ──> predictions/
predictions/ + label ──> metrics.json, report.md (AUC, log loss, calibration, slices)

Each model actor encodes its rows with the run's vocabularies and numeric transforms
(`row_encoder`) and scores them with the run's model served on FBGEMM inference tables
(`serving`). `rows_in == rows_scored + rows_quarantined` is checked. The output folder is written
as a temporary folder and renamed when complete.

Example::

    s = predict(Path("runs/r"), Path("day2.tsv"), Path("out/day2"), dataset, PredictConfig(), spark)
    s["rows_in"] == s["rows_scored"] + s["rows_quarantined"]
    # -> True
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from features.config import DatasetConfig
from features.errors import UserError
from pipelines.ctr.batches import parquet_files
from pipelines.ctr.predict_input import KEY, parse_input
from pipelines.ctr.serving import SCORE, SERVING_MODES, RunModel, Scorer
from pipelines.runtime.ray_driver import start_ray


@dataclass
class PredictConfig:
    """How to score: serving precision, label column, batch size, Ray or one process."""

    serving: str = "as-trained"
    label: str | None = None          # the input's label column (default: the dataset's label role, if present)
    batch_size: int = 4096
    single_process: bool = False
    workers: int = 2                  # model actors in Ray mode
    cpus_per_worker: float = 1.0
    ray_address: str | None = None
    slice_features: int = 3


def model_columns(run: Path) -> list[str]:
    """The raw columns a run's model reads: the dense columns of its schema, the raw columns of its plan's
    features (a dense column for a bucket feature)."""
    from pipelines.ctr.row_encoder import RowEncoder

    enc = RowEncoder.load(Path(run) / "vocab")
    info = RunModel.load(Path(run) / "train" / "model")
    return list(dict.fromkeys([*enc.dense, *(enc.source(f) for t in info.plan.tables for f in t.features)]))


def _ray_init(cfg: PredictConfig) -> None:
    """Join `cfg.ray_address` / RAY_ADDRESS, or start a local Ray sized for the actor pool (the actors, plus the
    read and write tasks)."""
    start_ray(cfg.ray_address, int(cfg.workers * cfg.cpus_per_worker) + 1)


def actor_cpus(cfg: PredictConfig, cluster_cpus: float) -> float:
    """CPUs each model actor asks for: `cfg.cpus_per_worker`, or less on a cluster too small to keep one CPU
    free beside the actors for Ray Data's read and write tasks (the pipeline would wait for it forever).

    Example:
        >>> actor_cpus(PredictConfig(workers=2), 2.0), actor_cpus(PredictConfig(workers=2), 16.0)
        (0.5, 1.0)
    """
    spare = cluster_cpus - 1.0
    return min(cfg.cpus_per_worker, max(spare / cfg.workers, 0.1))


def block_rows(rows: int, cfg: PredictConfig, per_actor: int = 4, most_batches: int = 64) -> int:
    """Rows per Ray Data block: a whole number of `cfg.batch_size` batches, about `per_actor` blocks per model
    actor (so the pool shares even a small input), at most `most_batches` batches (a block is held in memory).

    Example:
        >>> block_rows(301, PredictConfig(workers=2, batch_size=128)), block_rows(10**6, PredictConfig(workers=2))
        (128, 126976)
    """
    batches = -(-rows // (per_actor * cfg.workers * cfg.batch_size))
    return min(max(batches, 1), most_batches) * cfg.batch_size


def score_single(run: Path, parsed: Path, out: Path, cfg: PredictConfig, keep: list[str], label: str | None) -> str:
    """Score `parsed` in this process into `out/part-00000.parquet`; returns the serving backend."""
    scorer = Scorer(run, cfg.serving, keep=keep, label=label)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    ds = pads.dataset(parquet_files(parsed), format="parquet")
    for piece in ds.to_batches(batch_size=cfg.batch_size):
        if piece.num_rows == 0:
            continue
        t = scorer(pa.Table.from_batches([piece]))
        writer = writer or pq.ParquetWriter(out / "part-00000.parquet", t.schema)
        writer.write_table(t)
    if writer is not None:
        writer.close()
    return scorer.backend


def score_ray(run: Path, parsed: Path, out: Path, cfg: PredictConfig, keep: list[str], label: str | None) -> str:
    """Score `parsed` with Ray Data: a pool of `cfg.workers` model actors, rows kept in file order."""
    import ray
    import ray.data

    _ray_init(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    files = parquet_files(parsed)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    # blocks of a whole number of batches, in file order: a read alone gives a block per row group (one for a
    # small input, leaving actors idle) and batches whose rows depend on how it split the files
    per_block = block_rows(rows, cfg)
    ds = (ray.data.read_parquet(files, override_num_blocks=max(cfg.workers, -(-rows // per_block)))
          .repartition(target_num_rows_per_block=per_block))
    cpus = actor_cpus(cfg, float(ray.cluster_resources().get("CPU", 1.0)))
    threads = max(int(cpus), 1)
    scored = ds.map_batches(Scorer, fn_constructor_kwargs={"run": str(Path(run).resolve()), "serving": cfg.serving,
                                                           "keep": keep, "label": label, "threads": threads},
                            batch_size=cfg.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=cfg.workers), num_cpus=cpus)
    scored.write_parquet(str(out))
    return RunModel.load(Path(run) / "train" / "model").backend(cfg.serving)


def predict(run: Path, input_path: Path, out: Path, dataset: DatasetConfig, cfg: PredictConfig, spark) -> dict[str, Any]:
    """Score `input_path` (raw rows in the run's format) with the run's model into `out` (see module doc)."""
    from pipelines.ctr.predict_report import write_predict_report

    run, out = Path(run), Path(out)
    if cfg.serving not in SERVING_MODES:
        raise UserError(f"--serving {cfg.serving}: unknown; use one of {', '.join(SERVING_MODES)}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--output {out}: the folder exists and is not empty; choose a new folder or delete it")
    model_cols = model_columns(run)
    r = dataset.roles
    ids = [c for c in dict.fromkeys([r.session_id, r.user_id, r.item_id]) if c]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        got = parse_input(spark, input_path, dataset, tmp, keep=[*ids, *model_cols], label=cfg.label)
        seconds["parse"] = time.perf_counter() - t0
        keep = [*KEY, *ids]
        t0 = time.perf_counter()
        score = score_single if cfg.single_process else score_ray
        backend = score(run, got.parsed, tmp / "predictions", cfg, keep, got.label)
        seconds["score"] = time.perf_counter() - t0
        scored = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(tmp / "predictions"))
        n = got.counts
        if scored != n.rows_ok:
            raise RuntimeError(f"predict: {n.rows_ok} parsed rows but {scored} scored; a row was lost")
        summary: dict[str, Any] = {
            "run": str(run), "input": str(input_path), "serving": cfg.serving, "backend": backend,
            "mode": "single_process" if cfg.single_process else "ray", "workers": 1 if cfg.single_process else cfg.workers,
            "rows_in": n.rows_in, "rows_scored": scored, "rows_quarantined": n.rows_quarantined,
            "quarantine_reasons": n.reasons, "label": got.label, "columns": [*keep, SCORE, *([got.label] if got.label else [])],
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "rows_per_s": round(scored / seconds["score"], 1) if seconds["score"] > 0 else None, "config": asdict(cfg)}
        if got.label:
            summary["metrics"] = write_predict_report(run, tmp, got.label, cfg, summary)
        shutil.rmtree(got.parsed)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

"""Batch scoring of new raw rows with a finished run's exported model: `sparserec predict`.

raw rows ── ingest rules (Spark, `predict_input`) ──> parsed/ + quarantine/
parsed/  ── Ray Data `from_items(units).map_batches(UnitScorer, compute=ActorPoolStrategy(size=workers))`
            (or the same units in one process) ──> predictions/part-<unit>.parquet
predictions/ + label ──> metrics.json, report.md (AUC, log loss, calibration, slices)

Each model actor reads its units of rows straight from the parsed Parquet (`predict_units`), encodes
them with the run's vocabularies and numeric transforms (`row_encoder`), scores them with the run's model
served on FBGEMM inference tables (`serving`) and writes them: one Ray Data stage, no rows through the
object store. `rows_in == rows_scored + rows_quarantined` is checked. The output folder is written
as a temporary folder and renamed when complete.

Example::

    s = predict(Path("runs/r"), Path("day2.tsv"), Path("out/day2"), dataset, PredictConfig(), spark)
    s["rows_in"] == s["rows_scored"] + s["rows_quarantined"]
    # -> True
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from features.config import DatasetConfig
from features.errors import UserError
from pipelines.ctr.batches import parquet_files
from pipelines.ctr.predict_input import KEY, parse_input
from pipelines.ctr.predict_units import UnitReader, UnitScorer, Unit, plan_units, score_unit
from pipelines.ctr.serving import SCORE, SERVING_MODES, RunModel, Scorer

OBJECT_STORE_BYTES = 128 * 1024**2  # unit descriptors and counts only


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


def ray_init(cfg: PredictConfig) -> None:
    """Join `cfg.ray_address` / RAY_ADDRESS, or start a small local Ray for the actor pool: CPUs for the actors
    only (no read or write tasks run), no dashboard, a small object store (only unit descriptors and counts
    pass through it); nothing when Ray is up already."""
    from pipelines.runtime.ray_driver import start_ray

    start_ray(cfg.ray_address, max(math.ceil(cfg.workers * cfg.cpus_per_worker), 1), object_store_memory=OBJECT_STORE_BYTES)


def actor_cpus(cfg: PredictConfig, cluster_cpus: float) -> float:
    """CPUs each model actor asks for: `cfg.cpus_per_worker`, or an equal share of a cluster too small for the
    pool (the actors read and write their rows themselves, so no CPU is kept for other tasks).

    Example:
        >>> actor_cpus(PredictConfig(workers=2), 1.0), actor_cpus(PredictConfig(workers=2), 16.0)
        (0.5, 1.0)
    """
    return min(cfg.cpus_per_worker, max(cluster_cpus / cfg.workers, 0.1))


def block_rows(rows: int, cfg: PredictConfig, per_actor: int = 4, most_batches: int = 64) -> int:
    """Rows per unit of work: a whole number of `cfg.batch_size` batches, about `per_actor` units per model
    actor (so the pool shares even a small input), at most `most_batches` batches (a unit is held in memory).

    Example:
        >>> block_rows(301, PredictConfig(workers=2, batch_size=128)), block_rows(10**6, PredictConfig(workers=2))
        (128, 126976)
    """
    batches = -(-rows // (per_actor * cfg.workers * cfg.batch_size))
    return min(max(batches, 1), most_batches) * cfg.batch_size


def _units(parsed: Path, cfg: PredictConfig) -> tuple[list[str], list[Unit]]:
    files = parquet_files(parsed)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return files, plan_units(rows, block_rows(rows, cfg))


def score_single(run: Path, parsed: Path, out: Path, cfg: PredictConfig, keep: list[str], label: str | None) -> str:
    """Score `parsed` in this process, unit after unit, into `out/part-<unit>.parquet`; returns the serving
    backend."""
    files, units = _units(parsed, cfg)
    scorer = Scorer(run, cfg.serving, keep=keep, label=label)
    out.mkdir(parents=True, exist_ok=True)
    reader = UnitReader(files)
    for u in units:
        score_unit(scorer, reader, u, out, cfg.batch_size)
    return scorer.backend


def score_ray(run: Path, parsed: Path, out: Path, cfg: PredictConfig, keep: list[str], label: str | None) -> str:
    """Score `parsed` on Ray Data: one `map_batches` stage, a pool of `cfg.workers` model actors each reading,
    scoring and writing the units it is handed (the same units and batches as `score_single`). The vocabularies'
    hash indexes are built once, here, into the run's cache, and memory-mapped by every actor."""
    import ray
    import ray.data

    from pipelines.ctr.row_encoder import ensure_index_cache

    ensure_index_cache(Path(run) / "vocab")
    ray_init(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    files, units = _units(parsed, cfg)
    out.mkdir(parents=True, exist_ok=True)
    cpus = actor_cpus(cfg, float(ray.cluster_resources().get("CPU", 1.0)))
    items = [{"index": u.index, "start": u.start, "rows": u.rows} for u in units]
    done = (ray.data.from_items(items, override_num_blocks=max(len(items), 1))
            .map_batches(UnitScorer, fn_constructor_kwargs={
                "run": str(Path(run).resolve()), "serving": cfg.serving, "keep": keep, "label": label,
                "files": [str(Path(f).resolve()) for f in files], "out": str(Path(out).resolve()),
                "batch_size": cfg.batch_size, "threads": max(int(cpus), 1)},
                batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.workers), num_cpus=cpus)
            .take_all())
    if sorted(int(r["index"]) for r in done) != [u.index for u in units]:
        raise RuntimeError(f"predict: {len(units)} units of work but {len(done)} came back from the model actors")
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

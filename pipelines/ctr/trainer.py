"""Run the training loop: on a Ray cluster with Ray Train's `TorchTrainer`, or in this process.

`fit(...)` is the driver: it counts the data, picks the mode from `TrainConfig.ray`
(`single_process`, `num_workers`, `cpus_per_worker`, `use_gpu`, `address` / `RAY_ADDRESS`),
shows a rich progress bar while the loop runs, and returns the best validation epoch's checkpoint folder.
`FailureConfig(max_failures)` restarts a failed worker group, which resumes from the last
checkpoint (`ray.train.get_checkpoint()` inside the loop).

Ray overhead, and what keeps it small (issue 5's target: a Ray Train step at most 15% dearer than
single-process mode's, `benchmarks/training_throughput.py`):
- input: a train split under `training.ray.materialize_below_mb` is read once by the driver into one Arrow
  share per worker in the object store (`ray_train_inputs`); each worker fetches its share once and slices it
  into batches locally, as single-process mode batches its pyarrow stream, so no epoch pays Ray Data's
  start-up or per-batch iterator and Ray Data's stats actor does not start beside the
  steps. Larger splits stream through Ray Data (`read_parquet` + `streaming_split`), the path that works for
  data larger than memory;
- CPU: workers run at `worker_niceness` 0 instead of Ray's 15; `training.ray.quiet` turns off, for the run
  only, Ray Train services it does not use (preemption watcher actor, metrics export), whose start-up
  otherwise competes with the first steps on a small machine;
- waiting: the loop reports checkpoints asynchronously and the controller polls every `controller_poll_s`.

Ray start, the run config, the controller's environment and `fit()` with progress are the runtime's
(`pipelines/runtime/ray_driver.py`), shared with the session models; what is CTR's here is the input
(`ray_train_inputs`), the job and which checkpoint is the best epoch's.

Example::

    outcome = fit(Path("runs/r/vocab"), plan, Path("runs/r/.tmp-train"), TrainConfig(), EmbeddingsConfig(), seed=0)
    outcome.checkpoint
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from embeddings.config import EmbeddingsConfig
from embeddings.spec import EmbeddingPlan
from features.errors import UserError
from pipelines.ctr.batches import (TRAIN_DATASET, EncodedSchema, count_rows, equal_shares, parquet_files, split_path,
                               uncompressed_bytes)
from pipelines.ctr.checkpoint import read_history, read_state
from pipelines.ctr.evaluate import evaluate_run, load_model
from pipelines.ctr.loop import KEEP_ORDER, LoopJob, run_single_process, train_loop_per_worker
from pipelines.ctr.report import write_report
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.errors import TrainingDivergedError
from pipelines.runtime.ray_driver import final_checkpoint, fit_with_progress, ray_init, ray_run_config


@dataclass
class FitOutcome:
    """The best validation epoch's checkpoint of a finished run (the last one when no epoch was scored), the full
    history and what the loop measured."""

    checkpoint: Path
    history: dict[str, list]
    mode: str
    workers: int
    seconds: float
    examples: int
    steps: int
    peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


def make_job(vocab: Path, plan: EmbeddingPlan, out: Path, cfg: TrainConfig, emb_cfg: EmbeddingsConfig, seed: int,
             work_dir: Path | None = None) -> LoopJob:
    """The picklable job of one run (checkpoints under `work_dir`, default `out`); checks that the encoded splits exist."""
    vocab = Path(vocab)
    encoded = vocab / "encoded"
    EncodedSchema.load(vocab / "schema.json")  # fails early, in one line, when the vocab stage is missing
    train_rows = count_rows(split_path(encoded, "train"))
    split_path(encoded, "validation")
    world = 1 if cfg.ray.single_process else cfg.ray.num_workers
    per_worker = max(cfg.batch_size // world, 1)
    steps = (train_rows // world) // per_worker
    if steps == 0:
        raise UserError(f"{encoded / 'train'}: {train_rows} rows give no full batch of {per_worker} per worker; "
                        "lower training.batch_size")
    return LoopJob(encoded=str(encoded), schema_path=str(vocab / "schema.json"), plan_json=plan.to_json(), out=str(out),
                   train=cfg, embeddings=emb_cfg, seed=seed, global_batch=per_worker * world, steps_per_epoch=steps,
                   progress_path=str(Path(out) / ".progress.json"), work=str(work_dir) if work_dir is not None else None)


class _Progress:
    """A rich progress bar fed by the loop (single process) or by a progress file (Ray, rank 0)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), disable=not enabled, transient=False)
        self.task = self.bar.add_task("train", total=total, info="")

    def update(self, info: dict) -> None:
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
                        if k in ("epoch", "loss", "val_auc", "examples_per_s"))
        self.bar.update(self.task, completed=info.get("step", 0), info=text)

    def __enter__(self) -> "_Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fit_single(job: LoopJob, show_progress: bool) -> FitOutcome:
    total = job.train.max_steps or job.steps_per_epoch * job.train.epochs
    with _Progress(total, show_progress) as progress:
        res = run_single_process(job, progress.update)
    if res.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint under {job.work_dir}/checkpoints")
    best = job.work_dir / "checkpoints" / res.state.best_checkpoint if res.state.best_checkpoint else None
    return FitOutcome(best if best is not None and best.is_dir() else Path(res.checkpoint), res.state.history,
                      "single_process", 1, res.seconds, res.examples, res.state.step, _peak_rss_mb(),
                      extra={**res.extra, "best_epoch": res.state.stopping.best_epoch})


def ray_train_inputs(job: LoopJob) -> tuple[dict[str, Any], Any, LoopJob]:
    """The train inputs of the workers: `(datasets, DataConfig, job)` for `TorchTrainer`.

    A train split below `training.ray.materialize_below_mb` (uncompressed, the model's columns) is read once
    here into equal consecutive shares, one Arrow table per rank put in the object store
    (`job.train_shares`, `job.ray_input == "materialized"`): each worker fetches its own share once and
    slices it into batches locally (`table_batches`, the batching of single-process mode), so an epoch pays
    neither Ray Data's start-up nor its per-batch iterator, and no Ray Data actor competes with the steps.
    A larger split streams through Ray Data (`read_parquet` + `streaming_split`, order preserved so the same
    rows reach the same worker on a restart), re-read every epoch and never held in memory whole. With
    `training.shuffle` the stream's blocks come in one seeded order and each worker shuffles its rows in a seeded
    local buffer; materialized workers each deal their rows from a seeded permutation of all shares
    (`pipelines/ctr/shuffle.py`).

    Example::

        datasets, data_config, job = ray_train_inputs(job)
        datasets, job.ray_input, len(job.train_shares)
        # -> ({}, 'materialized', 2)
    """
    import ray
    from ray.train import DataConfig

    cfg = job.train
    path = Path(job.encoded) / "train"
    columns = job.spec("train").columns
    if uncompressed_bytes(path, columns) < cfg.ray.materialize_below_mb * 2**20:
        # one contiguous chunk per share: the workers' batches are zero-copy slices of the object store's buffers
        shares = [ray.put(t.combine_chunks()) for t in equal_shares(path, columns, cfg.ray.num_workers)]
        return {}, DataConfig(datasets_to_split=[]), replace(job, ray_input="materialized", train_shares=shares)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.read_parquet(parquet_files(path))
    if cfg.shuffle:  # blocks in one seeded order (the same every epoch and restart); rows shuffle in each worker's buffer
        from ray.data import RandomSeedConfig

        ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=job.seed & 0xFFFFFFFF, reseed_after_execution=False))
    datasets = {TRAIN_DATASET: ds}
    return datasets, DataConfig(datasets_to_split=[TRAIN_DATASET]), replace(job, ray_input="stream", train_shares=None)


def best_checkpoint(result: Any, latest: Path, out: Path) -> tuple[Path, int | None]:
    """The best validation epoch's checkpoint of a Ray Train result (named in the latest checkpoint's state) and
    that epoch; the latest checkpoint when no epoch was scored."""
    state = read_state(latest)
    name = state.best_checkpoint
    if name is None or name == latest.name:
        return latest, state.stopping.best_epoch
    if (latest.parent / name).is_dir():
        return latest.parent / name, state.stopping.best_epoch
    for ckpt, _ in result.best_checkpoints or []:
        if Path(ckpt.path).name == name:
            return Path(ckpt.to_directory(str(Path(out) / "best_checkpoint"))), state.stopping.best_epoch
    raise RuntimeError(f"{latest.parent / name}: the best epoch's checkpoint is gone (Ray Train kept "
                       f"{[Path(c.path).name for c, _ in result.best_checkpoints or []]})")


def _fit_ray(job: LoopJob, show_progress: bool) -> FitOutcome:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = job.train
    t0 = time.perf_counter()
    ray_init(cfg)
    tick = time.perf_counter()
    datasets, data_config, job = ray_train_inputs(job)
    input_seconds = time.perf_counter() - tick
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"job": job}, datasets=datasets, dataset_config=data_config,
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker={"CPU": cfg.ray.cpus_per_worker}),
        run_config=ray_run_config(cfg, job.work_dir, keep_by=KEEP_ORDER))
    total = cfg.max_steps or job.steps_per_epoch * cfg.epochs
    with _Progress(total, show_progress) as progress:
        result = fit_with_progress(trainer, cfg, Path(job.progress_path or ""), progress.update)
    metrics = result.metrics or {}
    if metrics.get("diverged"):
        raise TrainingDivergedError(metrics["diverged"])
    ckpt = final_checkpoint(result, Path(job.out))
    if ckpt is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint under {job.work_dir}/checkpoints")
    best, best_epoch = best_checkpoint(result, ckpt, Path(job.out))
    return FitOutcome(best, read_history(ckpt), "ray", cfg.ray.num_workers, float(metrics.get("seconds", time.perf_counter() - t0)),
                      int(metrics.get("examples", 0)), int(metrics.get("step", 0)), float(metrics.get("peak_rss_mb", 0.0)),
                      extra={"driver_seconds": time.perf_counter() - t0, "ray_input": job.ray_input, "best_epoch": best_epoch,
                             "seconds_input_prepare": round(input_seconds, 3),
                             **{k: v for k, v in metrics.items() if k.startswith("seconds_")}})


def fit(vocab: Path, plan: EmbeddingPlan, out: Path, cfg: TrainConfig, emb_cfg: EmbeddingsConfig, seed: int,
        show_progress: bool = True, work_dir: Path | None = None) -> FitOutcome:
    """Train on `vocab/encoded` with `plan`; write checkpoints under `work_dir` (default `out`), resuming from the
    latest one found there; return the best epoch's checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = make_job(vocab, plan, out, cfg, emb_cfg, seed, work_dir)
    return _fit_single(job, show_progress) if cfg.ray.single_process else _fit_ray(job, show_progress)


def _link_tree(src: Path, dst: Path) -> Path:
    """`src` copied to `dst` as hard links (no bytes copied; a plain copy across file systems)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)
    return dst


def _relative(path: Path, base: Path) -> str:
    """`path` relative to the stage folder (which is renamed when the stage completes)."""
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def export_model(checkpoint: Path, plan: EmbeddingPlan, dense_in: int, cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Write `out/model/`: the unsharded weights (`model.pt`), the embeddings in FBGEMM serving form
    (`embeddings.pt`, when the model holds PlanEmbeddings) and `model.json` describing both (its paths relative
    to `model/`)."""
    import torch

    folder = Path(out) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    model = load_model(checkpoint, plan, dense_in, cfg)
    torch.save(model.state_dict(), folder / "model.pt")
    info: dict[str, Any] = {"model": cfg.model.model_dump(mode="json"), "dense_in": dense_in, "plan": json.loads(plan.to_json()),
                            "weights": "model.pt"}
    try:
        from embeddings.export import export_embeddings, find_plan_embeddings

        find_plan_embeddings(model)
        # paths in model.json are relative to the model folder: the stage folder is renamed when the stage completes
        info["embeddings"] = {**export_embeddings(model, folder / "embeddings.pt"), "path": "embeddings.pt"}
        info["embeddings_file"] = "embeddings.pt"
    except (ImportError, UserError) as err:  # e.g. the LR baseline holds a plain EBC, not PlanEmbeddings
        info["embeddings_export_skipped"] = str(err)
    (folder / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    info["bytes"] = sum(p.stat().st_size for p in folder.iterdir())
    return info


def train_stage(inputs: dict[str, Path], out: Path, cfg: TrainConfig, emb_cfg: EmbeddingsConfig, seed: int = 0,
                show_progress: bool = True, work_dir: Path | None = None) -> dict[str, Any]:
    """Stage `train`: inputs `vocab` (encoded splits + schema.json) and `plan` (embedding_plan.json).

    Writes `checkpoints/`, `model/`, `metrics.json`, `report.md`, `model_card.md`, PNGs; returns a
    summary with rows_in (training rows) and the headline metrics. `work_dir` (given by `jobs.runs.run_stage`:
    `<run>/.checkpoints/train-<fingerprint>/`) holds the checkpoints while training, so a re-run after a kill
    resumes from them; they are then linked into `out/checkpoints/`.
    """
    vocab = Path(inputs["vocab"])
    plan_path = Path(inputs["plan"])
    plan_file = plan_path / "embedding_plan.json" if plan_path.is_dir() else plan_path
    if not plan_file.exists():
        raise UserError(f"{plan_file}: embedding_plan.json not found; run the 'plan' stage first")
    plan = EmbeddingPlan.load(plan_file)
    schema = EncodedSchema.load(vocab / "schema.json")
    outcome = fit(vocab, plan, out, cfg, emb_cfg, seed, show_progress=show_progress, work_dir=work_dir)
    if work_dir is not None and Path(work_dir).resolve() != Path(out).resolve():
        kept = (Path(work_dir) / "checkpoints").resolve()
        _link_tree(kept, Path(out) / "checkpoints")  # the stage output keeps its checkpoints, as hard links
        if outcome.checkpoint.resolve().is_relative_to(kept):
            outcome.checkpoint = Path(out) / "checkpoints" / outcome.checkpoint.resolve().relative_to(kept)
    evaluation = evaluate_run(outcome.checkpoint, vocab, plan, cfg)
    exported = export_model(outcome.checkpoint, plan, len(schema.dense), cfg, Path(out))
    training = {"mode": outcome.mode, "workers": outcome.workers, "steps": outcome.steps, "seconds": outcome.seconds,
                "examples": outcome.examples, "examples_per_s": outcome.examples_per_s, "peak_rss_mb": outcome.peak_rss_mb,
                "checkpoint": _relative(outcome.checkpoint, Path(out)), **outcome.extra}
    try:
        import torch

        if torch.cuda.is_available():
            training["cuda_max_memory_allocated"] = int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    metrics = {"training": training, "evaluation": evaluation, "artifact_bytes": exported["bytes"]}
    if "embeddings" in exported:  # the embeddings really exported, beside the plan's bound (DSL: an upper bound)
        metrics["embeddings_export"] = {"bytes": exported["embeddings"]["bytes_after"], "plan_bytes": plan.total_bytes,
                                        "dense_fp32_bytes": exported["embeddings"]["dense_fp32_bytes"]}
    card = {"model": cfg.model.name, "config": {"training": cfg.model_dump(mode="json"), "embeddings": emb_cfg.model_dump(mode="json"), "seed": seed},
            "data": str(vocab / "encoded"), "rows": {s: count_rows(vocab / "encoded" / s) for s in ("train", "validation", "test")
                                                     if (vocab / "encoded" / s).exists()},
            "dense": schema.dense, "features": [f for t in plan.tables for f in t.features], "artifact_bytes": exported["bytes"]}
    write_report(Path(out), metrics, outcome.history, card)
    (Path(out) / ".progress.json").unlink(missing_ok=True)
    val = evaluation["splits"].get("validation", {})
    test = evaluation["splits"].get("test", {})
    return {"rows_in": card["rows"].get("train"), "steps": outcome.steps, "val_auc": val.get("auc"), "test_auc": test.get("auc"),
            "test_log_loss": test.get("log_loss"), "embedding_bytes": evaluation["embedding_bytes"],
            "examples_per_s": outcome.examples_per_s}

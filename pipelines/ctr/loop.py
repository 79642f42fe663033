"""The per-worker training loop: one function that reads like a single-process loop.

`train_loop_per_worker(config)` is what Ray Train runs on every worker, and what single-process
mode runs in this process (world size 1). It builds the model from the plan, shards it with DMP
(fused FBGEMM optimizer on the tables, Adam/Adagrad on the dense parameters), resumes from the
last checkpoint if there is one, then per step: forward, BCE loss, NaN/inf guard, DSL observe,
backward, dense-gradient clipping, dense optimizer step, DSL update; a checkpoint every
`checkpoint_every` steps and after every epoch's validation (AUC, early stopping).

The differences between Ray and single-process mode (where batches come from, where checkpoints
go) live in the two small `*IO` classes below; the loop itself does not know which one it has.

Example::

    job = LoopJob(encoded="runs/r/vocab/encoded", schema_path="runs/r/vocab/schema.json",
                  plan_json=plan.to_json(), out="runs/r/.tmp-train", train=TrainConfig(),
                  embeddings=EmbeddingsConfig(), seed=0, global_batch=1024)
    run_loop(job, LocalIO(job))
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from embeddings.config import EmbeddingsConfig
from embeddings.spec import EmbeddingPlan
from pipelines.ctr.batches import (TRAIN_DATASET, Batch, BatchSpec, EncodedSchema, batch_spec, count_rows, parquet_batches,
                                ray_batches, row_range_batches, table_batches)
from embeddings.sharding import dense_optimizer
from pipelines.ctr.checkpoint import TrainState, read_checkpoint, write_checkpoint
from pipelines.ctr.metrics import auc, log_loss
from pipelines.ctr.model import build_ctr_model
from pipelines.ctr.shuffle import shuffled_parquet_batches, shuffled_share, stream_seed
from pipelines.runtime.checkpoint import latest, publish
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.distributed import global_mean, local_process_group, resolve_device, shard_model
from pipelines.runtime.errors import TrainingDivergedError
from pipelines.runtime.failure import plant_failure
from pipelines.runtime.ray_worker import report_checkpoint, restored_checkpoint, worker_setup, write_progress

# The metric by which Ray Train keeps `checkpoints_to_keep` checkpoints (highest first; the latest is always kept):
# the step, plus BEST_BONUS for an epoch end that is the new best, so the current best epoch's checkpoint (the
# newest of those with the bonus) is never deleted while newer ones come and go.
KEEP_ORDER, BEST_BONUS = "keep_order", 1e12


@dataclass
class LoopJob:
    """Everything a worker needs (picklable, sent to Ray workers as `config["job"]`)."""

    encoded: str
    schema_path: str
    plan_json: str
    out: str
    train: TrainConfig
    embeddings: EmbeddingsConfig
    seed: int
    global_batch: int
    steps_per_epoch: int = 0
    progress_path: str | None = None
    # Ray mode: "stream" (one Ray Data stream split across the workers, dataset `TRAIN_DATASET`) or
    # "materialized" (one in-memory Arrow share per worker, `train_shares`); set by the trainer
    ray_input: str = "stream"
    # Ray mode, "materialized": the object refs of each rank's Arrow share of the train split (set by the trainer)
    train_shares: list[Any] | None = None
    # where checkpoints, the planted-failure marker and a diverged batch go (default `out`): a folder that outlives a
    # failed attempt (`<run>/.checkpoints/train-<fingerprint>/`), so a re-run of the stage resumes from it
    work: str | None = None

    @property
    def work_dir(self) -> Path:
        return Path(self.work or self.out)

    @property
    def plan(self) -> EmbeddingPlan:
        return EmbeddingPlan.from_json(self.plan_json)

    def spec(self, split: str) -> BatchSpec:
        return batch_spec(EncodedSchema.load(Path(self.schema_path)), self.plan, source=f"{self.encoded}/{split}")


@dataclass
class LoopResult:
    """What the loop hands back: its final state and, in single-process mode, the final checkpoint."""

    state: TrainState
    checkpoint: str | None
    diverged: str | None = None
    seconds: float = 0.0
    examples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LocalIO:
    """Single-process mode: pyarrow streaming, checkpoints published under `<work>/checkpoints/step_*`."""

    rank, world = 0, 1

    def __init__(self, job: LoopJob, on_progress: Callable[[dict], None] | None = None) -> None:
        self.job = job
        self.device = resolve_device(job.train.device)
        self.ckpt_dir = job.work_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.on_progress = on_progress

    def train_batches(self, spec: BatchSpec, batch_size: int, skip: int, epoch: int) -> Iterator[Batch]:
        path, cfg = Path(self.job.encoded) / "train", self.job.train
        if cfg.shuffle:
            return shuffled_parquet_batches(path, spec, batch_size, self.job.seed, epoch, cfg.shuffle_buffer_rows,
                                            drop_last=True, skip=skip)
        return parquet_batches(path, spec, batch_size, drop_last=True, skip=skip)

    def val_batches(self, spec: BatchSpec, batch_size: int) -> Iterator[Batch]:
        return parquet_batches(Path(self.job.encoded) / "validation", spec, batch_size)

    def restore_dir(self) -> Path | None:
        return latest(self.ckpt_dir, "step_*")

    def save(self, name: str, writer: Callable[[Path], None], metrics: dict, best: str | None = None) -> str:
        """Publish a checkpoint; keep the newest `checkpoints_to_keep` and the best validation epoch's (`best`)."""
        return str(publish(self.ckpt_dir, name, writer, self.job.train.checkpoints_to_keep, "step_*", protect=best))

    def progress(self, info: dict) -> None:
        if self.on_progress is not None:
            self.on_progress(info)


class RayIO:
    """Ray Train mode: this worker's share of the train split (its Arrow share from the object store, or its
    Ray Data stream split), checkpoints through `ray.train.report`."""

    def __init__(self, job: LoopJob) -> None:
        self.job = job
        self.rank, self.world, self.device = worker_setup(job.train)
        self._table: Any = None

    def train_batches(self, spec: BatchSpec, batch_size: int, skip: int, epoch: int) -> Iterator[Batch]:
        import ray.train

        cfg, seed = self.job.train, self.job.seed
        if self.job.ray_input == "materialized":
            share = shuffled_share(self._shares(), self.world, self.rank, seed, epoch) if cfg.shuffle else self._share()
            return table_batches(share, spec, batch_size, drop_last=True, skip=skip)
        shuffle = {"local_shuffle_buffer_size": cfg.shuffle_buffer_rows,
                   "local_shuffle_seed": stream_seed(seed, epoch, self.rank)} if cfg.shuffle else {}
        return ray_batches(ray.train.get_dataset_shard(TRAIN_DATASET), spec, batch_size, drop_last=True, skip=skip,
                           **shuffle)

    def _fetch(self, rank: int) -> Any:
        import ray

        if not self.job.train_shares or len(self.job.train_shares) != self.world:
            raise RuntimeError(f"materialized train input has {len(self.job.train_shares or [])} shares for "
                               f"{self.world} workers; the trainer makes one per worker (ray_train_inputs)")
        return ray.get(self.job.train_shares[rank])

    def _share(self) -> Any:
        """This rank's Arrow share of a materialized train split, fetched from the object store once."""
        if self._table is None:
            self._table = self._fetch(self.rank)
        return self._table

    def _shares(self) -> Any:
        """All ranks' shares as one table (zero-copy views of the object store): the rows a shuffled epoch deals out."""
        if self._table is None:
            import pyarrow as pa

            self._table = pa.concat_tables([self._fetch(r) for r in range(self.world)])
        return self._table

    def val_batches(self, spec: BatchSpec, batch_size: int) -> Iterator[Batch]:
        # Validation reads this rank's equal slice of the split directly: a Ray Data pass per epoch costs
        # tens of seconds of start-up, and every rank must run the same number of (collective) forwards.
        path = Path(self.job.encoded) / "validation"
        share = count_rows(path) // self.world
        return row_range_batches(path, spec, batch_size, self.rank * share, (self.rank + 1) * share)

    def restore_dir(self) -> Path | None:
        return restored_checkpoint()

    def save(self, name: str, writer: Callable[[Path], None], metrics: dict, best: str | None = None) -> str:
        """Report a checkpoint to Ray Train. Which ones Ray keeps follows the `KEEP_ORDER` metric (see there)."""
        report_checkpoint(name, writer, {**metrics, KEEP_ORDER: metrics.get(KEEP_ORDER, -1.0)}, self.rank)
        return name

    def progress(self, info: dict) -> None:
        if self.rank == 0 and self.job.progress_path:
            write_progress(Path(self.job.progress_path), info)


def _id_frequencies(vocab_dir: Path, plan: EmbeddingPlan) -> dict[str, torch.Tensor]:
    """Training-period id counts per table, from the vocab stage, for tables indexed by vocabulary ids.

    Only single-feature tables whose rows equal the feature's vocabulary (dense, quantized) qualify;
    hashed or QR tables get a random initial mask instead.
    """
    if not vocab_dir.exists():
        return {}
    import pyarrow.parquet as pq

    vocab = pq.read_table(vocab_dir, columns=["feature", "id", "count"]).to_pandas()
    out: dict[str, torch.Tensor] = {}
    for t in plan.tables:
        if len(t.features) != 1 or t.method not in ("dense", "fp16", "int8", "int4", "pruned"):
            continue
        rows = vocab[vocab["feature"] == t.features[0]]
        if rows.empty or int(rows["id"].max()) >= t.rows:
            continue
        counts = torch.zeros(t.rows, dtype=torch.float64)
        counts[torch.as_tensor(rows["id"].to_numpy(), dtype=torch.long)] = torch.as_tensor(rows["count"].to_numpy(), dtype=torch.float64)
        out[t.name] = counts
    return out


def _dsl_controller(model: nn.Module, job: LoopJob, total_steps: int):
    """The DSL controller with its observe hook on the embedding collection, or None when DSL is off."""
    if not job.embeddings.dsl.enabled:
        return None
    from embeddings.dsl import attach, make_controller

    plan = job.plan
    densities = {t.name: t.dsl_density for t in plan.tables if t.dsl_density is not None}
    cfg = job.embeddings.dsl
    freqs = _id_frequencies(Path(job.encoded).parent / "vocab", plan) if cfg.init == "frequency" else {}
    if cfg.init == "frequency" and not freqs:
        cfg = cfg.model_copy(update={"init": "random"})  # no table is indexed by raw vocabulary ids
    ctl = make_controller(model, cfg, total_steps=max(total_steps, 1), seed=job.seed,  # cfg.mode: exact | lazy | row
                          frequencies=freqs or None, densities=densities or None,
                          tables=list(densities) if densities else None)
    attach(model, ctl)
    return ctl


def evaluate_split(model: nn.Module, batches: Iterator[Batch], device: torch.device, world: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities over a split; in a group, gathered from every rank."""
    model.eval()
    ys, ps = [], []
    with torch.no_grad():
        for b in batches:
            b = b.to(device)
            ps.append(torch.sigmoid(model(b.dense, b.sparse)).float().cpu().numpy())
            ys.append(b.labels.cpu().numpy())
    model.train()
    y = np.concatenate(ys) if ys else np.zeros(0, np.float32)
    p = np.concatenate(ps) if ps else np.zeros(0, np.float32)
    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (y, p))
        y = np.concatenate([a for a, _ in parts])
        p = np.concatenate([b for _, b in parts])
    return y, p


def _save_bad_batch(batch: Batch, out: Path, step: int, rank: int, loss: float) -> Path:
    path = out / f"nan_batch_step{step}_rank{rank}.pt"
    torch.save({"step": step, "loss": loss, "dense": batch.dense.cpu(), "keys": batch.sparse.keys(),
                "values": batch.sparse.values().cpu(), "lengths": batch.sparse.lengths().cpu(),
                "labels": batch.labels.cpu()}, path)
    return path


class LookupPenalty:
    """`training.embedding_l2`: an L2 penalty on the embeddings a training batch looks up, `l2 x` the batch mean of
    the squared norm of a row's pooled embeddings (every feature). A forward hook on the model's `sparse` module
    keeps the batch's pooled output; its gradient reaches the tables through the fused FBGEMM backward like the
    loss's own, so each looked-up row is pulled toward 0 in proportion to how often it is seen (lazy L2, on any
    kernel). Off (no hook, penalty 0) when `l2` is 0.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class M(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.sparse = nn.Identity()
        >>> m = M()
        >>> lp = LookupPenalty(m, 0.5)
        >>> _ = m.sparse(torch.tensor([[1.0, 2.0], [0.0, 2.0]]))
        >>> float(lp.penalty())        # 0.5 x mean(5, 4)
        2.25
    """

    def __init__(self, model: nn.Module, l2: float) -> None:
        self.l2, self._pooled = l2, None
        if l2 > 0:
            sparse = getattr(getattr(model, "module", model), "sparse", None)
            if sparse is None:
                raise ValueError("training.embedding_l2: the model has no `sparse` (pooled embeddings) module; set it to 0")
            sparse.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        # evaluation (no grad): nothing to penalise
        self._pooled = (output if isinstance(output, torch.Tensor) else output.values()) if torch.is_grad_enabled() else None

    def penalty(self) -> torch.Tensor | float:
        """The penalty of the last training forward (0.0 when off), to add to its loss."""
        if self._pooled is None:
            return 0.0
        pooled, self._pooled = self._pooled, None
        return self.l2 * pooled.pow(2).sum(dim=1).mean()


TIMERS = ("data", "first_batch", "step", "step_cpu", "checkpoint", "validation")


class _Clock:
    """Where a worker's time goes, in seconds: `data` waiting for batches (`first_batch`: the part before each
    epoch's first batch, i.e. the input pipeline's start-up); `step` forward/backward/optimizer only; `step_cpu` the
    CPU time this thread got during the steps (`step - step_cpu` is time spent waiting for a core: other processes,
    Ray's own); `checkpoint`; `validation`."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.seconds = dict.fromkeys(TIMERS, 0.0)

    def add(self, timer: str, seconds: float) -> None:
        self.seconds[timer] += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def figures(self) -> dict[str, float]:
        return {f"seconds_{k}": round(v, 3) for k, v in self.seconds.items()}


class _Training:
    """One worker's run of the loop: everything it needs is built in `__init__` (model sharded with DMP, dense
    optimizer, DSL controller, state restored from the last checkpoint), then `run()` goes epoch by epoch."""

    def __init__(self, job: LoopJob, io: LocalIO | RayIO) -> None:
        self.job, self.io, self.cfg = job, io, job.train
        self.per_worker = max(job.global_batch // io.world, 1)
        torch.manual_seed(job.seed)
        self.train_spec, self.val_spec = job.spec("train"), job.spec("validation")
        model = build_ctr_model(job.plan, len(self.train_spec.dense), self.cfg.model)
        self.model = shard_model(model, job.embeddings, io.device)
        self.opt = dense_optimizer(self.model, self.cfg.dense_learning_rate, self.cfg.dense_optimizer,
                                   self.cfg.dense_weight_decay)
        self.lookups = LookupPenalty(self.model, self.cfg.embedding_l2)
        self.dense_params = [p for g in self.opt.param_groups for p in g["params"]]
        self.total = self.cfg.max_steps or job.steps_per_epoch * self.cfg.epochs
        self.dsl = _dsl_controller(self.model, job, self.total)
        self.state = TrainState()
        restored = io.restore_dir()
        if restored is not None:
            self.state, dsl_state = read_checkpoint(restored, self.model, self.opt)
            self.state.history.setdefault("resumed_from", []).append(self.state.step)
            if self.dsl is not None and dsl_state:
                self.dsl.load_state_dict(dsl_state)
        # a run restored at its end takes no step: its result is the checkpoint it was restored from
        self.last_ckpt: str | None = str(restored) if restored is not None else None
        self.saved_steps: set[int] = set()
        job.work_dir.mkdir(parents=True, exist_ok=True)  # a diverged batch is kept where a failed attempt leaves it
        self.examples, self.clock = 0, _Clock()
        self.loss_sum, self.loss_n, self.last_loss = 0.0, 0, float("nan")

    def at_max_steps(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    def run(self) -> LoopResult:
        """Train until the epochs, `max_steps` or early stopping end it; checkpoint along the way."""
        self.model.train()
        while self.state.epoch < self.cfg.epochs and not self.state.stopping.stopped and not self.at_max_steps():
            diverged = self.train_epoch()
            if diverged is not None:
                return LoopResult(self.state, self.last_ckpt, diverged=diverged, seconds=self.clock.elapsed(),
                                  examples=self.examples)
            self.end_epoch()
            if self.at_max_steps():
                break
        return LoopResult(self.state, self.last_ckpt, seconds=self.clock.elapsed(), examples=self.examples,
                          extra=self.clock.figures())

    def train_epoch(self) -> str | None:
        """The steps of one epoch from the current position (a checkpoint every `checkpoint_every` steps); the
        message when the loss diverged."""
        tick, first = time.perf_counter(), True
        batches = self.io.train_batches(self.train_spec, self.per_worker, skip=self.state.batch, epoch=self.state.epoch)
        for batch in batches:
            fetched, fetched_cpu = time.perf_counter(), time.thread_time()
            self.clock.add("data", fetched - tick)
            if first:
                self.clock.add("first_batch", fetched - tick)
                first = False
            if self.at_max_steps():
                break
            diverged = self.step(batch)
            if diverged is not None:
                return diverged
            tock = time.perf_counter()
            self.clock.add("step", tock - fetched)
            self.clock.add("step_cpu", time.thread_time() - fetched_cpu)
            if self.state.step % self.cfg.checkpoint_every == 0:
                self.last_ckpt = self.checkpoint({"loss": self.last_loss})
            tick = time.perf_counter()
            self.clock.add("checkpoint", tick - tock)
        return None

    def step(self, batch: Batch) -> str | None:
        """One training step (the planted failure first); the message when the loss is not finite."""
        cfg, state, world = self.cfg, self.state, self.io.world
        plant_failure(cfg.fail_at_step, state.step + 1, self.io.rank, world, self.job.work_dir, ray=isinstance(self.io, RayIO))
        batch = batch.to(self.io.device, non_blocking=True)
        loss = F.binary_cross_entropy_with_logits(self.model(batch.dense, batch.sparse), batch.labels)
        loss = loss + self.lookups.penalty()
        local = float(loss.detach())
        shown = global_mean(loss.detach(), world) if world > 1 else local
        if not math.isfinite(shown):
            return self.diverged(batch, shown, local)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.dense_params, cfg.grad_clip_norm)
        self.opt.step()
        if self.dsl is not None:
            self.dsl_update()
        state.step += 1
        state.batch += 1
        self.examples += len(batch) * world
        self.last_loss = shown
        self.loss_sum, self.loss_n = self.loss_sum + shown, self.loss_n + 1
        if state.step % cfg.log_every == 0:
            state.history["train"].append({"step": state.step, "epoch": state.epoch, "loss": self.loss_sum / self.loss_n})
            self.loss_sum, self.loss_n = 0.0, 0
            self.io.progress({"step": state.step, "total": self.total, "epoch": state.epoch, "loss": shown,
                              "examples_per_s": self.examples / max(self.clock.elapsed(), 1e-9)})
        return None

    def dsl_update(self) -> None:
        """The DSL controller's update after a step, recorded in the history when it changed the masks."""
        update = self.dsl.after_step(self.state.step)
        if update["updated"]:
            keys = ("fraction", "scheduled", "exchanged", "active", "budget", "embedding_bytes")
            self.state.history.setdefault("dsl", []).append(  # steps counted from 1, as in "train"
                {"step": self.state.step + 1, **{k: update[k] for k in keys if k in update}})

    def diverged(self, batch: Batch, shown: float, local: float) -> str:
        """The one-line message of a non-finite loss; the batch is saved by the worker(s) whose own loss it is."""
        state, rank = self.state, self.io.rank
        where = _save_bad_batch(batch, self.job.work_dir, state.step + 1, rank, local) if not math.isfinite(local) else None
        msg = (f"training diverged: loss is {shown} at step {state.step + 1} (epoch {state.epoch}, batch "
               f"{state.batch}); the batch is saved{' in ' + str(where) if where else ' by the failing worker'}; "
               "lower training.dense_learning_rate / embeddings.learning_rate or check the inputs")
        if isinstance(self.io, RayIO):  # reported with a marker checkpoint so the driver's Result carries it
            self.io.save(f"diverged_{state.step + 1:08d}", lambda f: (f / "diverged.txt").write_text(msg),
                         {**self.stats(), "diverged": msg})
        return msg

    def end_epoch(self) -> None:
        """Validate (AUC, log loss), update early stopping, move to the next epoch and checkpoint."""
        state, cfg = self.state, self.cfg
        tick = time.perf_counter()
        y, p = evaluate_split(self.model, self.io.val_batches(self.val_spec, self.per_worker), self.io.device, self.io.world)
        self.clock.add("validation", time.perf_counter() - tick)
        val = {"epoch": state.epoch, "step": state.step, "auc": auc(y, p), "log_loss": log_loss(y, p) if len(y) else float("nan")}
        state.history["validation"].append(val)
        name = self.checkpoint_name()
        improved = state.stopping.update(state.epoch, val["auc"], cfg.early_stopping_patience, cfg.early_stopping_min_delta)
        if improved:
            state.best_checkpoint = name
        if not self.at_max_steps():
            state.epoch, state.batch = state.epoch + 1, 0
        self.io.progress({"step": state.step, "total": self.total, "epoch": state.epoch, "val_auc": val["auc"]})
        tick = time.perf_counter()
        self.last_ckpt = self.checkpoint({"val_auc": val["auc"], "val_log_loss": val["log_loss"]}, name, best=improved)
        self.clock.add("checkpoint", time.perf_counter() - tick)

    def checkpoint_name(self) -> str:
        """Unique per run (Ray requires it): an epoch end on a checkpoint step gets a suffix that sorts later."""
        return f"step_{self.state.step:08d}" + ("_epoch" if self.state.step in self.saved_steps else "")

    def checkpoint(self, metrics: dict, name: str | None = None, best: bool = False) -> str:
        """Save a checkpoint (`io.save`) with the run's figures; `best` marks the new best epoch's (see `KEEP_ORDER`)."""
        dsl_state = self.dsl.state_dict() if self.dsl is not None else None
        name = name or self.checkpoint_name()
        self.saved_steps.add(self.state.step)
        keep = float(self.state.step) + (BEST_BONUS if best else 0.0)
        return self.io.save(name, lambda folder: write_checkpoint(folder, self.model, self.opt, self.state, dsl_state),
                            {**metrics, **self.stats(), KEEP_ORDER: keep}, best=self.state.best_checkpoint)

    def stats(self) -> dict:
        """The run's figures so far (Ray Train V2 keeps the metrics of the last checkpoint report, so every report
        carries them)."""
        return {"step": self.state.step, "epoch": self.state.epoch, "examples": self.examples,
                "seconds": self.clock.elapsed(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                **{f"seconds_{k}": round(v, 3) for k, v in self.clock.seconds.items()}}


def run_loop(job: LoopJob, io: LocalIO | RayIO) -> LoopResult:
    """Train until the epochs, `max_steps` or early stopping end it; checkpoint along the way."""
    return _Training(job, io).run()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: `config["job"]` is a `LoopJob`; every checkpoint report carries the run's figures."""
    job: LoopJob = config["job"]
    run_loop(job, RayIO(job))


def run_single_process(job: LoopJob, on_progress: Callable[[dict], None] | None = None) -> LoopResult:
    """The same loop in this process, in a world-size-1 process group (for debugging and small runs)."""
    with local_process_group(resolve_device(job.train.device)):
        res = run_loop(job, LocalIO(job, on_progress))
    if res.diverged:
        raise TrainingDivergedError(res.diverged)
    return res

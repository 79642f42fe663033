"""The training loop of the session models, the same in one process and on every Ray Train worker.

Every model maps a batch of prefixes to a representation and every catalogue item to an
embedding; the next-item loss is a softmax over candidates:
- `softmax="full"`: every item seen in training is a candidate;
- `softmax="sampled"`: the batch's own targets (in-batch negatives) plus `negatives` items drawn
  uniformly from the training items, with the logQ correction (subtract log of each
  candidate's expected count in the candidate set) so popular items are not over-penalised.
M2TRec adds one cross-entropy per task attribute, weighted by `loss_weights` (next item, then the
task attributes in order). `SessionTrainStep` computes that loss in its `forward`, so data-parallel
training wraps it whole in DDP (Ray Train's `prepare_model`).

Data parallelism: one global order of the training examples per epoch (the same seed on every
rank); global batch j is split across the ranks, so N workers with a global batch B take the same
steps as one process with batch B (up to N - 1 examples left out per epoch). Rank 0 validates
after each epoch and broadcasts the score (early stopping is the same everywhere); a checkpoint
(weights, optimizer, progress, RNG) is written after every epoch and every `checkpoint_every` steps
(`epoch_<done>_step_<step>`, sorting between the epoch checkpoints), and training resumes from the
last one, inside an epoch at the batch it had reached, with the same order and random draws.
The differences between the modes live in the `*SessionIO` classes.

Example::

    history = run_session_loop(model, data, TrainConfig(epochs=1), 0, LocalSessionIO(torch.device("cpu")))
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from features.errors import UserError
from models.m2trec import M2TRec
from models.popularity import Popularity
from embeddings.sharding import dense_optimizer
from pipelines.runtime.checkpoint import latest, publish
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.runtime.distributed import broadcast_from_rank0, global_mean, resolve_device
from pipelines.runtime.errors import TrainingDivergedError
from pipelines.runtime.failure import plant_failure
from pipelines.sessions.checkpoint import STATE, SessionProgress, restore_session_checkpoint, write_session_checkpoint
from pipelines.sessions.data import SessionData
from pipelines.sessions.windows import training_windows


class TrainingError(UserError):
    """Training cannot go on (NaN loss, unusable settings)."""


def next_item_loss(model: nn.Module, rep: torch.Tensor, targets: torch.Tensor, cand: torch.Tensor,
                   log_q: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the true next item among the sorted candidates `cand` (logQ-corrected when given)."""
    logits = rep @ model.item_repr(cand).T
    if log_q is not None:
        logits = logits - log_q[cand][None, :]
    return F.cross_entropy(logits, torch.searchsorted(cand, targets))


def candidates(cfg: ModelConfig, targets: torch.Tensor, train_items: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Sorted candidate items of a batch: every training item (full) or targets + uniform draws (sampled)."""
    if cfg.softmax == "full":
        return train_items
    draw = torch.randint(0, train_items.numel(), (cfg.negatives,), generator=gen).to(train_items.device)
    return torch.unique(torch.cat([targets, train_items[draw]]))


class SessionTrainStep(nn.Module):
    """The loss of one batch (next item + weighted task heads): the module DDP wraps."""

    def __init__(self, model: nn.Module, cfg: ModelConfig, log_q: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.weights = cfg.loss_weights
        self.task_weights = dict(zip(cfg.task_attributes, cfg.loss_weights[1:]))
        self.log_q = log_q if cfg.softmax == "sampled" and cfg.logq_correction else None

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        if targets.dim() == 2:   # training windows (pipelines/sessions/windows.py): a target at every position
            valid = targets[:, :items.shape[1]] > 0
            rep, targets = self.model.forward_all(items, lengths)[valid], targets[:, :items.shape[1]][valid]
            task_logits = {a: h(rep) for a, h in self.model.task_heads.items()} if isinstance(self.model, M2TRec) else {}
        else:
            rep, task_logits = self.model(items, lengths)
        loss = self.weights[0] * next_item_loss(self.model, rep, targets, cand, self.log_q)
        if isinstance(self.model, M2TRec):
            for a in self.model.config.task_classes:
                y = self.model.catalogue.categorical[a][targets]
                loss = loss + self.task_weights[a] * F.cross_entropy(task_logits[a], y)
        return loss


class SessionIO(Protocol):
    """What differs between one process and a Ray Train worker."""

    rank: int
    world: int
    device: torch.device

    def wrap(self, module: nn.Module) -> nn.Module: ...
    def restore(self) -> Path | None: ...
    def save(self, name: str, writer: Callable[[Path], Any], metrics: dict) -> None: ...
    def progress(self, epoch: int, total: int, loss: float) -> None: ...
    def diverged(self, message: str) -> None: ...
    ray: bool  # failure injection: SIGKILL (Ray Train restarts the group) or raise (`pipelines/runtime/failure.py`)
    work_dir: Path | None  # where the planted-failure marker goes


class LocalSessionIO:
    """One process: checkpoints (when `checkpoint_dir` is set) under `checkpoint_dir/epoch_*`."""

    rank, world, ray = 0, 1, False

    def __init__(self, device: torch.device, checkpoint_dir: Path | None = None, keep: int = 2,
                 on_progress: Callable[[int, int, float], None] | None = None) -> None:
        self.device, self.checkpoint_dir, self.keep, self.on_progress = device, checkpoint_dir, keep, on_progress
        self.work_dir = Path(checkpoint_dir).parent if checkpoint_dir is not None else None

    def wrap(self, module: nn.Module) -> nn.Module:
        return module

    def restore(self) -> Path | None:
        return latest(self.checkpoint_dir, "epoch_*", STATE) if self.checkpoint_dir is not None else None

    def save(self, name: str, writer: Callable[[Path], Any], metrics: dict) -> None:
        if self.checkpoint_dir is not None:
            publish(Path(self.checkpoint_dir), name, writer, self.keep, "epoch_*")

    def progress(self, epoch: int, total: int, loss: float) -> None:
        if self.on_progress is not None:
            self.on_progress(epoch, total, loss)

    def diverged(self, message: str) -> None:
        raise TrainingDivergedError(message)


def run_session_loop(model: nn.Module, data: SessionData, train: TrainConfig, seed: int, io: SessionIO,
                     validate: Callable[[nn.Module], float] | None = None) -> dict:
    """Train `model` on this rank's share of the training split; returns the history.

    `validate(model) -> score` (higher is better) runs on rank 0 after each epoch; early stopping follows
    `pipelines/runtime/early_stopping.py` (`early_stopping_patience`, `early_stopping_min_delta`) and the best epoch's
    weights are restored at the end.
    """
    cfg = train.model
    rank, world, device = io.rank, io.world, io.device
    torch.manual_seed(seed + rank)  # dropout differs per rank; the batch order below does not
    history: dict[str, Any] = {"model": cfg.name, "loss": [], "validation": [], "seconds": 0.0, "device": str(device),
                               "workers": world}
    if isinstance(model, Popularity):
        return history
    t0 = time.perf_counter()
    model.to(device)
    if isinstance(model, M2TRec):
        model.attach_catalogue(model.catalogue.to(device))
    if cfg.train_windows:
        ex = training_windows(data.sessions["train"], cfg.max_length)
    else:
        ex = data.examples("train", cfg.max_length)
    per_rank = len(ex) // world
    if per_rank == 0:
        raise TrainingError(f"training.ray.num_workers: {world} workers but only {len(ex)} training examples; use fewer workers.")
    counts = data.train_counts().to(device)
    train_items = counts.nonzero().squeeze(1)
    b = min(train.batch_size, len(ex))
    local_b = max(1, b // world)
    p = counts.double() / counts.sum()
    # expected times an item appears among a rank's candidates: as an in-batch target, or as a uniform draw
    log_q = torch.log(local_b * p + cfg.negatives / max(1, train_items.numel())).float().clamp(min=-30)
    step_module = io.wrap(SessionTrainStep(model, cfg, log_q))
    opt = dense_optimizer(model, train.dense_learning_rate, train.dense_optimizer)
    gens = {"order": torch.Generator().manual_seed(seed), "negatives": torch.Generator().manual_seed(seed + 1 + rank)}
    state, best_state = SessionProgress(history=history), None
    restored = io.restore()
    if restored is not None:
        state, best_state = restore_session_checkpoint(restored, rank, model, opt, gens)
        state.history.setdefault("resumed_from", []).append(state.step)
        state.history.update(device=str(device), workers=world)
    history = state.history
    at_max = lambda: bool(train.max_steps) and state.step >= train.max_steps  # noqa: E731
    history.setdefault("train", [])
    while state.epoch < train.epochs and not state.stopping.stopped and not at_max():
        model.train()
        # the order generator as the epoch starts: a checkpoint inside the epoch saves it, so a resumed run deals
        # the same order and goes on from batch `state.batch`
        epoch_order = torch.Generator().set_state(gens["order"].get_state())
        order = torch.randperm(len(ex), generator=gens["order"]) if train.shuffle else torch.arange(len(ex))
        if hasattr(ex, "bucket") and world == 1:   # training windows: batches of similar length (windows.py)
            order = ex.bucket(order, local_b)
        mine = order[: per_rank * world].view(per_rank, world)[:, rank]  # global batch j = local batches j of all ranks
        for s in range(state.batch * local_b, per_rank, local_b):
            if at_max():
                break
            plant_failure(train.fail_at_step, state.step + 1, rank, world, io.work_dir, io.ray)
            batch = ex.subset(mine[s:s + local_b])
            items, lengths, targets = batch.items.to(device), batch.lengths.to(device), batch.targets.to(device)
            width = int(lengths.max())
            cand = candidates(cfg, targets[targets > 0], train_items, gens["negatives"])
            loss = step_module(items[:, :width], lengths, targets, cand)
            shown = global_mean(loss.detach(), world)
            if not math.isfinite(shown):
                io.diverged(f"training diverged: loss is {shown} at step {state.step + 1} (epoch {state.epoch}, batch "
                            f"{state.batch}: examples {s * world}..{(s + len(batch)) * world - 1} of the epoch's order); "
                            "lower training.dense_learning_rate or check the inputs")
                return history
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip_norm)
            opt.step()
            state.step, state.batch, state.epoch_loss = state.step + 1, state.batch + 1, state.epoch_loss + shown
            state.log_loss, state.log_n = state.log_loss + shown, state.log_n + 1
            if state.step % train.log_every == 0:
                history["train"].append({"step": state.step, "epoch": state.epoch, "loss": state.log_loss / state.log_n})
                state.log_loss, state.log_n = 0.0, 0
            if state.step % train.checkpoint_every == 0 and s + local_b < per_rank and not at_max():  # (an epoch end saves)
                io.save(f"epoch_{state.epoch:04d}_step_{state.step:08d}",
                        lambda folder: write_session_checkpoint(folder, rank, model, opt, state, best_state,
                                                                {**gens, "order": epoch_order}),
                        {"epoch": state.epoch, "step": state.step, "loss": shown, "examples": len(ex)})
        history["loss"].append(state.epoch_loss / max(1, state.batch))
        state.batch, state.epoch_loss, state.log_loss, state.log_n = 0, 0.0, 0.0, 0
        io.progress(state.epoch + 1, train.epochs, history["loss"][-1])
        score = None
        if validate is not None:
            score = broadcast_from_rank0(validate(model) if rank == 0 else None, world)
            history["validation"].append(score)
            if state.stopping.update(state.epoch, score, train.early_stopping_patience, train.early_stopping_min_delta):
                best_state = copy.deepcopy(model.state_dict())
        state.epoch += 1
        io.save(f"epoch_{state.epoch:04d}",
                lambda folder: write_session_checkpoint(folder, rank, model, opt, state, best_state, gens),
                {"epoch": state.epoch, "loss": history["loss"][-1], "validation": score, "examples": len(ex)})
    if best_state is not None:
        model.load_state_dict(best_state)
        history["best_epoch"] = state.stopping.best_epoch
    history["seconds"] = round(time.perf_counter() - t0, 2)
    history["examples"] = len(ex)
    return history


def train_session_model(model: nn.Module, data: SessionData, train: TrainConfig, seed: int = 0,
                        validate: Callable[[nn.Module], float] | None = None,
                        progress: Callable[[int, int, float], None] | None = None,
                        checkpoint_dir: Path | None = None) -> dict:
    """Train `model` in this process on the training split of `data`; returns the history (loss per epoch, seconds).

    `validate(model) -> score` (higher is better) is called after each epoch when given; the best
    epoch's weights are restored at the end and early stopping follows `early_stopping_patience`.
    With `checkpoint_dir`, a checkpoint is written after every epoch and training resumes from the
    latest one found there.
    """
    io = LocalSessionIO(resolve_device(train.device), checkpoint_dir, train.checkpoints_to_keep, progress)
    history = run_session_loop(model, data, train, seed, io, validate)
    history["mode"] = "single_process"
    return history

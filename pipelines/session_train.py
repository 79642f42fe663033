"""Training of the session models (M2TRec, SASRec, GRU4Rec; popularity just counts), single process.

Every model maps a batch of prefixes to a representation and every catalogue item to an
embedding; the next-item loss is a softmax over candidates:
- `softmax="full"`: every item seen in training is a candidate;
- `softmax="sampled"`: the batch's own targets (in-batch negatives) plus `negatives` items drawn
  uniformly from the training items, with the logQ correction (subtract log of each
  candidate's expected count in the candidate set) so popular items are not over-penalised.
M2TRec adds one cross-entropy per task attribute, weighted by `loss_weights` (next item,
then the task attributes in order). Training stops with an error on a NaN/inf loss, naming the
step. With validation examples, the weights of the best epoch (Recall@20) are kept.

Example:
    >>> model = build_model(ModelConfig(name="m2trec", hidden=16), data)          # doctest: +SKIP
    >>> history = train_session_model(model, data, TrainConfig(epochs=1), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from features.errors import UserError
from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.m2trec import M2TRec, M2TRecConfig
from models.popularity import Popularity
from models.sasrec import SASRec, SASRecConfig
from pipelines.config import ModelConfig, TrainConfig
from pipelines.session_data import SessionData, SessionExamples

SESSION_MODELS = ("m2trec", "sasrec", "gru4rec", "popularity")


class TrainingError(UserError):
    """Training cannot go on (NaN loss, unusable settings)."""


def pick_device(setting: str) -> torch.device:
    """"auto" → CUDA when present, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'.")
    return torch.device(setting)


def build_model(cfg: ModelConfig, data: SessionData) -> nn.Module:
    """The session model named by `cfg.name`, sized for the catalogue and vocabularies of `data`."""
    n = data.n_items + 1
    train_items = torch.unique(data.train_counts().nonzero().squeeze(1))
    if cfg.name == "m2trec":
        feats = data.features
        for a in cfg.task_attributes:
            if a not in feats.categorical:
                raise TrainingError(f"training.model.task_attributes: '{a}' is not a categorical item attribute; "
                                    f"choose from {', '.join(feats.categorical)} (or [] for no extra heads).")
        if len(cfg.loss_weights) < 1 + len(cfg.task_attributes):
            raise TrainingError(f"training.model.loss_weights: {len(cfg.task_attributes) + 1} weights needed "
                                f"(next item, then {', '.join(cfg.task_attributes)}), got {len(cfg.loss_weights)}.")
        # a head with loss weight 0 would stay untrained: leave it out (the single-task variant)
        tasks = {a: data.sizes[a] for a, w in zip(cfg.task_attributes, cfg.loss_weights[1:]) if w > 0}
        mc = M2TRecConfig(categorical={a: data.sizes[a] for a in feats.categorical},
                          multi_valued={a: data.sizes[a] for a in feats.multi_valued}, task_classes=tasks,
                          hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout,
                          max_length=cfg.max_length, pooling=cfg.pooling, combine=cfg.item_combine,
                          hybrid_item_id_buckets=cfg.hybrid_item_id_buckets)
        return M2TRec(mc, feats)
    if cfg.name == "sasrec":
        return SASRec(SASRecConfig(n, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_length), train_items)
    if cfg.name == "gru4rec":
        return GRU4Rec(GRU4RecConfig(n, cfg.hidden, 1, cfg.dropout), train_items)
    if cfg.name == "popularity":
        return Popularity(data.train_counts())
    raise TrainingError(f"training.model.name: '{cfg.name}' is not a session model; use one of {', '.join(SESSION_MODELS)}.")


def _task_targets(model: nn.Module, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    if not isinstance(model, M2TRec):
        return {}
    return {a: model.catalogue.categorical[a][targets] for a in model.config.task_classes}


def next_item_loss(model: nn.Module, rep: torch.Tensor, targets: torch.Tensor, cfg: ModelConfig,
                   train_items: torch.Tensor, log_q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the true next item among the candidates (full or in-batch + sampled)."""
    if cfg.softmax == "full":
        cand = train_items
    else:
        draw = torch.randint(0, train_items.numel(), (cfg.negatives,), generator=gen).to(train_items.device)
        cand = torch.unique(torch.cat([targets, train_items[draw]]))
    emb = model.item_repr(cand)
    logits = rep @ emb.T
    if cfg.softmax == "sampled" and cfg.logq_correction:
        logits = logits - log_q[cand][None, :]
    pos = torch.searchsorted(cand, targets)
    return F.cross_entropy(logits, pos)


def train_session_model(model: nn.Module, data: SessionData, train: TrainConfig, seed: int = 0,
                        validate: Callable[[nn.Module], float] | None = None,
                        progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train `model` on the training split of `data`; returns the history (loss per epoch, seconds).

    `validate(model) -> score` (higher is better) is called after each epoch when given; the best
    epoch's weights are restored at the end and early stopping follows `early_stopping_patience`.
    """
    cfg = train.model
    torch.manual_seed(seed)
    device = pick_device(train.device)
    history: dict = {"model": cfg.name, "loss": [], "validation": [], "seconds": 0.0, "device": str(device)}
    if isinstance(model, Popularity):
        return history
    t0 = time.perf_counter()
    model.to(device)
    if isinstance(model, M2TRec):
        model.attach_catalogue(model.catalogue.to(device))
    ex = data.examples("train", cfg.max_length)
    counts = data.train_counts().to(device)
    train_items = counts.nonzero().squeeze(1)
    b = min(train.batch_size, len(ex))
    p = counts.double() / counts.sum()
    # expected times an item appears among the candidates: as an in-batch target, or as a uniform draw
    log_q = torch.log(b * p + cfg.negatives / max(1, train_items.numel())).float().clamp(min=-30)
    weights = cfg.loss_weights
    task_weights = dict(zip(cfg.task_attributes, weights[1:]))
    opt = torch.optim.Adam(model.parameters(), lr=train.dense_learning_rate)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad_epochs, step = -np.inf, None, 0, 0
    for epoch in range(train.epochs):
        model.train()
        order = torch.randperm(len(ex), generator=gen)
        total, batches = 0.0, 0
        for s in range(0, len(ex), b):
            batch = ex.subset(order[s:s + b])
            items, lengths, targets = batch.items.to(device), batch.lengths.to(device), batch.targets.to(device)
            width = int(lengths.max())
            rep, task_logits = model(items[:, :width], lengths)
            loss = weights[0] * next_item_loss(model, rep, targets, cfg, train_items, log_q, gen)
            for a, y in _task_targets(model, targets).items():
                loss = loss + task_weights[a] * F.cross_entropy(task_logits[a], y)
            if not torch.isfinite(loss):
                raise TrainingError(f"training stopped: loss is {loss.item()} at epoch {epoch}, step {step} "
                                    f"(batch of examples {s}..{s + len(batch) - 1}); lower dense_learning_rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip_norm)
            opt.step()
            total, batches, step = total + loss.item(), batches + 1, step + 1
        history["loss"].append(total / max(1, batches))
        if progress:
            progress(epoch + 1, train.epochs, history["loss"][-1])
        if validate is not None:
            score = validate(model)
            history["validation"].append(score)
            if score > best:
                best, best_state, bad_epochs = score, copy.deepcopy(model.state_dict()), 0
            else:
                bad_epochs += 1
                if bad_epochs > train.early_stopping_patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
        history["best_epoch"] = int(np.argmax(history["validation"]))
    history["seconds"] = round(time.perf_counter() - t0, 2)
    history["examples"] = len(ex)
    return history


def save_model(model: nn.Module, cfg: ModelConfig, out: Path, history: dict | None = None) -> None:
    """`model.pt` (state dict) and `model.json` (its ModelConfig) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    (out / "model.json").write_text(json.dumps({"model": cfg.model_dump(mode="json"), "history": history or {}},
                                               indent=2, sort_keys=True) + "\n")


def load_model(folder: Path, data: SessionData) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a saved session model for the catalogue of `data` (weights loaded with weights_only=True)."""
    folder = Path(folder)
    if not (folder / "model.json").exists() or not (folder / "model.pt").exists():
        raise TrainingError(f"{folder}: no saved session model (model.json + model.pt); pass a folder written by `sparserec sessions train`.")
    cfg = ModelConfig.model_validate(json.loads((folder / "model.json").read_text())["model"])
    model = build_model(cfg, data)
    try:
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True, map_location="cpu"))
    except RuntimeError as err:
        raise TrainingError(f"{folder / 'model.pt'}: does not fit this catalogue ({str(err).splitlines()[0]}); "
                            "evaluate with the sessions folder the model was trained on.") from None
    return model, cfg


def train_stage(inputs: Mapping[str, Path], out: Path, train: TrainConfig, seed: int = 0,
                eval_positions: int = 1, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Stage: train `train.model` on `inputs["sessions"]`; writes the model and its test metrics.

    Writes `model.pt`, `model.json`, `metrics.json` (test split, by slice) and returns a summary.
    """
    from pipelines.session_data import load_sessions
    from pipelines.session_evaluate import evaluate_session_model

    data = load_sessions(inputs["sessions"])
    model = build_model(train.model, data)
    k = max(train.eval_k)
    val = (lambda m: evaluate_session_model(m, data, "validation", positions=1, ks=[k],
                                            max_length=train.model.max_length)["overall"][f"recall@{k}"]) \
        if data.sessions["validation"] else None
    history = train_session_model(model, data, train, seed=seed, validate=val, progress=progress)
    metrics = evaluate_session_model(model, data, "test", positions=eval_positions, ks=train.eval_k,
                                     max_length=train.model.max_length, seed=seed)
    metrics["model"] = train.model.name
    metrics["data_issues"] = data.issues
    save_model(model, train.model, out, history)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return {"rows_in": len(data.sessions["train"]), "rows_out": metrics["overall"]["n"], "model": train.model.name,
            "history": history, "test": metrics["overall"], "data_issues": data.issues}

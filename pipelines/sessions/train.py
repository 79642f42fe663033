"""The session `train` stage: train the session model a config names (M2TRec, SASRec, GRU4Rec; popularity just
counts), evaluate it on the test split, write it with its metrics and report.

The modules below it, in import order: `model.py` (build, save, load), `loop.py` (the training loop, in this
process or on a Ray worker), `evaluate.py` (ranking metrics, the validator), `ray_train.py` (the loop on Ray
Train), `select.py` (hybrid or metadata-only M2TRec on validation); this module re-exports the names the CLI
and tests use. The loop itself (losses, data-parallel split, checkpoints) is `pipelines/sessions/loop.py`. Where it
runs follows the CTR switch `training.ray`: `single_process: true` runs it in this process
(debugging, small runs), otherwise on Ray Train with `num_workers` workers (`pipelines/sessions/ray_train.py`).
Popularity has nothing to train and never starts Ray. With validation examples, the weights of the
best epoch (Recall@20) are kept.

Example::

    model = build_model(ModelConfig(name="m2trec", hidden=16), data)
    history = train_session_model(model, data, TrainConfig(epochs=1), seed=0)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Mapping

from pipelines.runtime.config import TrainConfig
from pipelines.sessions.data import load_sessions
from pipelines.sessions.evaluate import category_table, evaluate_session_model, validator
from pipelines.sessions.loop import TrainingError, next_item_loss, train_session_model
from pipelines.sessions.model import SESSION_MODELS, build_model, load_model, save_model, state_dict_mismatch
from pipelines.sessions.select import fit_selected

__all__ = ["SESSION_MODELS", "TrainingError", "build_model", "load_model", "next_item_loss",
           "save_model", "state_dict_mismatch", "train_session_model", "train_stage", "validator"]


def _write_report(metrics: dict, history: dict, out: Path, k: int) -> None:
    """`report.md`: the test figures and the per-category table (the run report includes it)."""
    o, c = metrics["overall"], metrics["cold"]
    lines = [f"# Session model `{metrics['model']}`", "",
             f"Trained {len(history.get('loss', []))} epoch(s) ({history.get('mode')}, {history.get('workers', 1)} worker(s)); "
             f"test: Recall@{k} {o[f'recall@{k}']:.4f}, NDCG@{k} {o[f'ndcg@{k}']:.4f} over {o['n']} targets; "
             f"cold targets: Recall@{k} {c[f'recall@{k}']:.4f} over {c['n']}.", ""]
    table = category_table(metrics, k)
    if table:
        lines += ["## By the target item's category", "", table]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def train_stage(inputs: Mapping[str, Path], out: Path, train: TrainConfig, seed: int = 0,
                eval_positions: int = 1, progress: Callable[[int, int, float], None] | None = None,
                show_progress: bool = False) -> dict:
    """Stage: train `train.model` on `inputs["sessions"]` (Ray Train or this process, per `training.ray`);
    evaluate it on the test split.

    Writes `model.pt`, `model.json`, `metrics.json` (test split, by slice and per category),
    `report.md`, `checkpoints/` and returns a summary. `show_progress`: when no `progress` callback
    is given, a rich bar per epoch on a terminal (as `sparserec run` does), else a plain line per
    epoch (`m2trec epoch 1/5 loss 6.123`) so redirected output shows progress too.
    """
    if progress is None and show_progress and not sys.stdout.isatty():
        def line(epoch: int, total: int, loss: float) -> None:
            print(f"{train.model.name} epoch {epoch}/{total} loss {loss:.4f}", flush=True)

        return train_stage(inputs, out, train, seed, eval_positions, progress=line)
    if progress is None and show_progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"training {train.model.name}", total=train.epochs)
            def update(epoch: int, total: int, loss: float) -> None:
                bar.update(task, completed=epoch, description=f"{train.model.name} epoch {epoch}/{total} loss {loss:.3f}")

            return train_stage(inputs, out, train, seed, eval_positions, progress=update)
    out = Path(out)
    data = load_sessions(inputs["sessions"])
    model, history, train, selection = fit_selected(inputs, out, data, train, seed, progress)   # hybrid M2TRec or not
    metrics = evaluate_session_model(model, data, "test", positions=eval_positions, ks=train.eval_k,
                                     max_length=train.model.max_length, seed=seed)
    metrics["model"] = train.model.name
    metrics["data_issues"] = data.issues
    metrics["training"] = {k: history[k] for k in ("mode", "workers", "seconds", "examples", "best_epoch", "resumed_from")
                           if k in history}
    if selection is not None:
        metrics["model_selection"] = selection
    save_model(model, train.model, out, history)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _write_report(metrics, history, out, max(train.eval_k))
    return {"rows_in": len(data.sessions["train"]), "rows_out": metrics["overall"]["n"], "model": train.model.name,
            "history": history, "test": metrics["overall"], "data_issues": data.issues,
            "mode": history.get("mode"), "workers": history.get("workers")}

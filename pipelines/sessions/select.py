"""Model selection on validation inside the session train stage: hybrid M2TRec or metadata-only M2TRec.

With `training.model.item_ids: auto` (the default) and data holding both warm items (seen in
training) and cold items (never seen there), the stage trains M2TRec twice, with the item-ID rows
(hybrid) and without them (metadata only). The hybrid candidate is the two ranked together
(`models/cold_ranks.py`: every cold item at exactly its metadata-only rank, warm items in the
hybrid's order), so on cold targets it scores exactly as the metadata-only model; the stage keeps
the candidate with the higher validation Recall@max(eval_k) (ties keep the hybrid). The hybrid
trains into the stage folder (`checkpoints/`), the alternative into `selection/metadata-only/`;
`metrics.json` records both scores under `model_selection`, and `model.json` the chosen setting
(`item_ids: on|off`, `cold_ranks: metadata-only` for the pair), so the saved model is rebuilt the
same way. Without validation sessions, or with any other setting, one model is trained as
configured. `tune_cold_offset` (the hybrid alone, cold items lifted by a score offset set on
validation) is the older alternative, kept for the benchmark's comparison.

Example::

    model, history, train, selection = fit_selected(inputs, out, data, train, seed=0)
    selection["chosen"], selection["scores"]
    # -> ('hybrid', {'hybrid': 0.081, 'metadata-only': 0.074})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from models.cold_ranks import ColdRankHybrid
from models.popularity import Popularity
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.evaluate import evaluate_session_model, validator
from pipelines.sessions.loop import train_session_model
from pipelines.sessions.model import build_model, has_warm_and_cold
from pipelines.sessions.ray_train import fit_sessions


def candidate_configs(cfg: ModelConfig, data: SessionData) -> dict[str, ModelConfig]:
    """The model settings to compare on validation: {"hybrid", "metadata-only"} for auto M2TRec on warm+cold data,
    else {"": cfg} (nothing to choose)."""
    if cfg.name == "m2trec" and cfg.item_ids == "auto" and data.sessions["validation"] and has_warm_and_cold(data):
        return {"hybrid": cfg.model_copy(update={"item_ids": "on"}),
                "metadata-only": cfg.model_copy(update={"item_ids": "off"})}
    return {"": cfg}


def _fit(sessions: Path, out: Path, model: nn.Module, data: SessionData, train: TrainConfig, seed: int,
         progress: Callable[[int, int, float], None] | None) -> dict:
    if train.ray.single_process or isinstance(model, Popularity):
        return train_session_model(model, data, train, seed=seed, validate=validator(data, train), progress=progress,
                                   checkpoint_dir=out / "checkpoints")
    return fit_sessions(Path(sessions), out, model, train, seed, progress=progress)


def fit_selected(inputs: Mapping[str, Path], out: Path, data: SessionData, train: TrainConfig, seed: int,
                 progress: Callable[[int, int, float], None] | None = None
                 ) -> tuple[nn.Module, dict, TrainConfig, dict[str, Any] | None]:
    """Train every candidate setting of `train.model`; (kept model, its history, its TrainConfig, selection record or None)."""
    candidates = candidate_configs(train.model, data)
    fitted: dict[str, tuple[nn.Module, dict, TrainConfig, float | None]] = {}
    for i, (name, mc) in enumerate(candidates.items()):
        tc = train.model_copy(update={"model": mc})
        torch.manual_seed(seed)
        model = build_model(mc, data)
        history = _fit(inputs["sessions"], Path(out) if i == 0 else Path(out) / "selection" / name, model, data, tc,
                       seed, progress)
        score = validator(data, tc)(model) if len(candidates) > 1 else None
        fitted[name] = (model, history, tc, score)
    if len(fitted) == 1:
        model, history, tc, _ = next(iter(fitted.values()))
        return model, history, tc, None
    k = max(train.eval_k)
    hybrid, history, tc, _ = fitted["hybrid"]
    pair = ColdRankHybrid(hybrid, fitted["metadata-only"][0])   # cold items at their metadata-only ranks
    fitted["hybrid"] = (pair, history, tc, validator(data, tc)(pair))
    chosen = max(fitted, key=lambda n: fitted[n][3])   # max keeps the first (hybrid) on ties
    model, history, tc, _ = fitted[chosen]
    record = {"criterion": f"validation recall@{k}", "chosen": chosen,
              "scores": {n: round(float(f[3]), 6) for n, f in fitted.items()},
              "item_ids": tc.model.item_ids, "cold_ranks": "metadata-only" if chosen == "hybrid" else None}
    return model, history, tc, record


COLD_OFFSETS = (0.0, 0.25, 0.5, 1.0, 2.0)


def tune_cold_offset(hybrid: nn.Module, metadata_only: nn.Module, data: SessionData, max_length: int, k: int
                     ) -> tuple[float, float]:
    """The smallest `cold_offset` of COLD_OFFSETS whose validation Recall@k on cold targets reaches the metadata-only
    model's (the largest when none does; 0 without cold validation targets); (offset, hybrid's overall Recall@k there).
    Sets the offset on `hybrid`."""
    def val(m: nn.Module) -> dict:
        return evaluate_session_model(m, data, "validation", positions=1, ks=[k], max_length=max_length)

    need = val(metadata_only)["cold"]
    for offset in COLD_OFFSETS:
        hybrid.config.cold_offset = offset
        got = val(hybrid)
        if got["cold"]["n"] == 0 or got["cold"][f"recall@{k}"] >= need[f"recall@{k}"] or offset == COLD_OFFSETS[-1]:
            return offset, float(got["overall"][f"recall@{k}"])
    raise AssertionError("unreachable")

"""The session models a config names, built for a catalogue; saved and loaded with their `ModelConfig`.

`build_model` checks the settings against the data (one-line `TrainingError`s naming the field) and sizes the
model for the catalogue and vocabularies of a sessions stage; `save_model` / `load_model` write and rebuild it
(`model.pt` + `model.json`, loaded with `weights_only=True`).

Example::

    model = build_model(ModelConfig(name="m2trec", hidden=16), data)
    save_model(model, ModelConfig(name="m2trec", hidden=16), Path("out"))
    model, cfg = load_model(Path("out"), data)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from models.cold_ranks import ColdRankHybrid
from models.gru4rec import GRU4Rec, GRU4RecConfig
from models.m2trec import M2TRec, M2TRecConfig
from models.popularity import Popularity
from models.sasrec import SASRec, SASRecConfig
from pipelines.runtime.config import ModelConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.loop import TrainingError

SESSION_MODELS = ("m2trec", "sasrec", "gru4rec", "popularity")


def build_model(cfg: ModelConfig, data: SessionData) -> nn.Module:
    """The session model named by `cfg.name`, sized for the catalogue and vocabularies of `data`."""
    n = data.n_items + 1
    train_items = torch.unique(data.train_counts().nonzero().squeeze(1))
    if cfg.name == "m2trec":
        feats = data.features
        if not feats.keys:
            raise TrainingError("training.model.name: m2trec encodes items by their attributes and this catalogue has none; "
                                "give the item table's columns (dataset.items.categorical / multi_valued) or train "
                                "sasrec, gru4rec or popularity.")
        for a in cfg.task_attributes:
            if a not in feats.categorical:
                raise TrainingError(f"training.model.task_attributes: '{a}' is not a categorical item attribute; "
                                    f"choose from {', '.join(feats.categorical)} (or [] for no extra heads).")
        if cfg.train_windows and not (cfg.causal and cfg.pooling == "last"):
            raise TrainingError("training.model.train_windows: m2trec trains on windows only left to right; "
                                "set causal: true and pooling: last, or train_windows: false.")
        if len(cfg.loss_weights) < 1 + len(cfg.task_attributes):
            raise TrainingError(f"training.model.loss_weights: {len(cfg.task_attributes) + 1} weights needed "
                                f"(next item, then {', '.join(cfg.task_attributes)}), got {len(cfg.loss_weights)}.")
        # a head with loss weight 0 would stay untrained: leave it out (the single-task variant)
        tasks = {a: data.sizes[a] for a, w in zip(cfg.task_attributes, cfg.loss_weights[1:]) if w > 0}
        mc = M2TRecConfig(categorical={a: data.sizes[a] for a in feats.categorical},
                          multi_valued={a: data.sizes[a] for a in feats.multi_valued}, task_classes=tasks,
                          hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout,
                          max_length=cfg.max_length, pooling=cfg.pooling, causal=cfg.causal, combine=cfg.item_combine,
                          hybrid_item_id_buckets=cfg.hybrid_item_id_buckets, item_ids=hybrid_item_ids(cfg, data),
                          item_id_dropout=cfg.item_id_dropout, item_id_method=cfg.item_id_method,
                          item_id_params=dict(cfg.item_id_params), cold_offset=cfg.cold_offset)
        return M2TRec(mc, feats, data.train_counts())
    if cfg.name == "sasrec":
        return SASRec(SASRecConfig(n, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.max_length), train_items)
    if cfg.name == "gru4rec":
        return GRU4Rec(GRU4RecConfig(n, embedding=cfg.hidden, hidden=cfg.rnn_hidden or 2 * cfg.hidden, layers=1,
                                     dropout=cfg.dropout), train_items)
    if cfg.name == "popularity":
        return Popularity(data.train_counts())
    raise TrainingError(f"training.model.name: '{cfg.name}' is not a session model; use one of {', '.join(SESSION_MODELS)}.")


def has_warm_and_cold(data: SessionData) -> bool:
    """Whether the catalogue holds items seen in training (warm) and items never seen there (cold)."""
    seen = data.train_counts()[1:] > 0
    return bool(seen.any()) and not bool(seen.all())


def hybrid_item_ids(cfg: ModelConfig, data: SessionData) -> bool:
    """M2TRec's item-ID rows: `item_ids` on / off, or auto = on for data with both warm and cold items."""
    return cfg.item_ids == "on" or (cfg.item_ids == "auto" and has_warm_and_cold(data))


def save_model(model: nn.Module, cfg: ModelConfig, out: Path, history: dict | None = None) -> None:
    """`model.pt` (state dict) and `model.json` (its ModelConfig; `cold_ranks: metadata-only` for a hybrid M2TRec
    ranked with its metadata-only model, `models/cold_ranks.py`) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    saved = {"model": cfg.model_dump(mode="json"), "history": history or {}}
    if isinstance(model, ColdRankHybrid):
        saved["cold_ranks"] = "metadata-only"
    (out / "model.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def load_model(folder: Path, data: SessionData) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a saved session model for the catalogue of `data` (weights loaded with weights_only=True)."""
    folder = Path(folder)
    if not (folder / "model.json").exists() or not (folder / "model.pt").exists():
        raise TrainingError(f"{folder}: no saved session model (model.json + model.pt); pass a folder written by `sparserec sessions train`.")
    saved = json.loads((folder / "model.json").read_text())
    cfg = ModelConfig.model_validate(saved["model"])
    model = build_model(cfg, data)
    if saved.get("cold_ranks") == "metadata-only":   # the hybrid and its metadata-only model, ranked together
        model = ColdRankHybrid(model, build_model(cfg.model_copy(update={"item_ids": "off"}), data))
    state = torch.load(folder / "model.pt", weights_only=True, map_location="cpu")
    diff = state_dict_mismatch(model.state_dict(), state)
    if diff:
        raise TrainingError(f"{folder / 'model.pt'}: does not fit this catalogue ({diff}); "
                            "evaluate with the sessions folder the model was trained on.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise TrainingError(f"{folder / 'model.pt'}: does not fit this model ({' '.join(str(err).split())}); "
                            "evaluate with the sessions folder the model was trained on.") from None
    return model, cfg


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], show: int = 3) -> str:
    """What differs between a model's state dict and a saved one, in one line ("" when they fit).

    Example:
        >>> state_dict_mismatch({"w": torch.zeros(3, 2)}, {"w": torch.zeros(5, 2), "b": torch.zeros(2)})
        'shape differs: w saved [5, 2], model [3, 2]; unexpected in the file: b'
    """
    def names(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")

    shapes = [k for k in expected if k in saved and tuple(saved[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    parts = []
    if shapes:
        parts.append("shape differs: " + "; ".join(f"{k} saved {list(saved[k].shape)}, model {list(expected[k].shape)}"
                                                   for k in shapes[:show])
                     + (f" and {len(shapes) - show} more" if len(shapes) > show else ""))
    if missing:
        parts.append(f"missing from the file: {names(missing)}")
    if unexpected:
        parts.append(f"unexpected in the file: {names(unexpected)}")
    return "; ".join(parts)

"""Offline evaluation of a finished run: load the final checkpoint into an unsharded model and
score the validation and test splits (AUC, log loss, calibration, per-slice AUC, bytes per table).

Evaluation runs in one process on the full splits, whatever mode trained the model, so the
numbers of a Ray run and a single-process run are comparable.

Example::

    res = evaluate_run(Path("runs/r/train/checkpoints/step_00000100"), Path("runs/r/vocab"), plan,
                       TrainConfig())
    res["splits"]["test"]["auc"]
    # -> 0.74
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from torch import nn

from embeddings.spec import EmbeddingPlan
from pipelines.ctr.batches import EncodedSchema, batch_spec, parquet_batches, parquet_files, split_path
from pipelines.ctr.checkpoint import load_weights
from pipelines.ctr.metrics import calibration, slice_auc, summary
from pipelines.ctr.model import LR_DIM, build_ctr_model
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.distributed import resolve_device
from pipelines.runtime.errors import EncodedDataError


def load_model(checkpoint: Path, plan: EmbeddingPlan, dense_in: int, cfg: TrainConfig) -> nn.Module:
    """An unsharded model with the checkpoint's weights (eval mode)."""
    model = build_ctr_model(plan, dense_in, cfg.model)
    return load_weights(checkpoint, model).eval()


def predict(model: nn.Module, split: Path, spec, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities of every row of a split, in file order."""
    model = model.to(device).eval()
    ys, ps = [], []
    with torch.no_grad():
        for b in parquet_batches(split, spec, batch_size):
            b = b.to(device)
            ps.append(torch.sigmoid(model(b.dense, b.sparse)).cpu().numpy())
            ys.append(b.labels.numpy() if b.labels.device.type == "cpu" else b.labels.cpu().numpy())
    return (np.concatenate(ys), np.concatenate(ps)) if ys else (np.zeros(0), np.zeros(0))


def slice_features(plan: EmbeddingPlan, k: int) -> list[str]:
    """The `k` features with the highest plan score (plan order when there are no scores)."""
    tables = sorted(plan.tables, key=lambda t: -(t.score if t.score is not None else float("-inf")))
    if all(t.score is None for t in plan.tables):
        tables = list(plan.tables)
    return [f for t in tables for f in t.features][:k]


def _column(split: Path, name: str) -> np.ndarray | None:
    col = pads.dataset(parquet_files(split), format="parquet").to_table(columns=[name]).column(0)
    if pa.types.is_list(col.type):
        return None
    return col.to_numpy()


def table_bytes(plan: EmbeddingPlan) -> list[dict[str, Any]]:
    """Bytes per table (actual under its method, and the fp32 equivalent)."""
    try:
        from embeddings.tables import table_report

        return table_report(plan)
    except ImportError:
        return [{"table": t.name, "features": t.features, "method": t.method, "rows": t.rows, "dim": t.dim,
                 "fp32_bytes": t.fp32_bytes, "bytes": t.bytes if t.bytes is not None else t.fp32_bytes} for t in plan.tables]


def evaluate_run(checkpoint: Path, vocab: Path, plan: EmbeddingPlan, cfg: TrainConfig,
                 splits: tuple[str, ...] = ("validation", "test")) -> dict[str, Any]:
    """Metrics of the checkpoint's model on `splits`, with calibration bins and slice AUCs.

    A split the vocab stage wrote no rows for (e.g. `test_share: 0`) is left out and named, with the reason, under
    `skipped_splits`; any other problem reading a split is raised."""
    vocab = Path(vocab)
    schema = EncodedSchema.load(vocab / "schema.json")
    device = resolve_device(cfg.device)
    spec0 = batch_spec(schema, plan)
    model = load_model(checkpoint, plan, len(spec0.dense), cfg)
    out: dict[str, Any] = {"splits": {}, "calibration": {}, "slices": {}}
    for s in splits:
        try:
            path = split_path(vocab / "encoded", s)
        except EncodedDataError as err:  # no Parquet rows in this split
            out.setdefault("skipped_splits", {})[s] = str(err)
            continue
        spec = batch_spec(schema, plan, source=str(path))
        y, p = predict(model, path, spec, cfg.batch_size, device)
        out["splits"][s] = summary(y, p)
        out["calibration"][s] = calibration(y, p)
        per_feature = {}
        for f in slice_features(plan, cfg.slice_features):
            values = _column(path, f)
            if values is not None and len(values) == len(y):
                per_feature[f] = slice_auc(y, p, values, top=5, min_rows=max(20, len(y) // 200))
        out["slices"][s] = per_feature
    if cfg.model.name == "lr":  # LR keeps its own dense tables of LR_DIM columns, whatever the plan's methods
        plan = EmbeddingPlan(tables=[replace(t, dim=LR_DIM, method="dense", params={}, bytes=t.rows * LR_DIM * 4)
                                     for t in plan.tables])
    out["tables"] = table_bytes(plan)
    out["embedding_bytes"] = int(sum(t["bytes"] for t in out["tables"]))
    out["embedding_fp32_bytes"] = int(sum(t["fp32_bytes"] for t in out["tables"]))
    out["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return out

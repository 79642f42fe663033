"""CTR metrics as plain numpy functions: AUC, log loss, calibration by bins, per-slice AUC.

Example:
    >>> import numpy as np
    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> round(log_loss(np.array([1, 0]), np.array([0.9, 0.1])), 4)
    0.1054
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN with one class only."""
    y = np.asarray(labels).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1-eps])."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Predicted vs. observed CTR in `bins` equal-count bins of the predictions (empty bins left out)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            out.append({"predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean()), "count": int(chunk.size)})
    return out


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    """Count-weighted mean |predicted - observed| over calibration bins."""
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in bins) / max(total, 1))


def slice_auc(labels: np.ndarray, probs: np.ndarray, values: np.ndarray, top: int = 5,
              min_rows: int = 50) -> list[dict[str, Any]]:
    """AUC within the `top` most frequent values of one feature (slices with one class give NaN)."""
    vals, counts = np.unique(np.asarray(values), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    out = []
    for i in order:
        if counts[i] < min_rows:
            continue
        m = values == vals[i]
        out.append({"value": int(vals[i]) if np.issubdtype(vals.dtype, np.integer) else str(vals[i]),
                    "rows": int(counts[i]), "ctr": float(np.mean(labels[m])), "auc": auc(labels[m], probs[m])})
    return out


def summary(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, log loss, mean prediction, observed CTR and calibration error of one split."""
    bins = calibration(labels, probs)
    return {"auc": auc(labels, probs), "log_loss": log_loss(labels, probs), "mean_prediction": float(np.mean(probs)),
            "observed_ctr": float(np.mean(labels)), "rows": int(len(labels)), "ece": expected_calibration_error(bins)}

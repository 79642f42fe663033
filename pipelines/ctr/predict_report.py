"""Metrics and report of a labelled `predict`: AUC, log loss, calibration, AUC by slice, beside the
run's own training-time test figures.

Uses the training report's metric functions (`pipelines.ctr.metrics`) and plots (`pipelines.ctr.report`),
so the numbers are computed exactly as the training-time evaluation computes them. Slices are the
most frequent raw values of the plan's top-scored features (`pipelines.ctr.evaluate.slice_features`).

The serving error the plan states: the planner prices a precision by the AUC share it keeps
(`embeddings.planner.PRECISION_QUALITY`: fp16 0.9995, int8 0.998, int4 0.99); `stated_auc_loss`
turns that into the AUC a serving precision may lose against the training-time figure.

Example:
    >>> stated_auc_loss("int8", 0.8)
    0.0016
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipelines.ctr.batches import parquet_files
from pipelines.ctr.evaluate import slice_features
from pipelines.ctr.metrics import calibration, slice_auc, summary
from pipelines.ctr.predict_input import KEY
from pipelines.ctr.report import _table, plot_calibration
from pipelines.ctr.serving import SCORE, RunModel


def stated_auc_loss(serving: str, reference_auc: float) -> float:
    """The AUC the planner's quality model lets `serving` lose from `reference_auc` (0 for fp32)."""
    from embeddings.planner import PRECISION_QUALITY

    return round((1.0 - PRECISION_QUALITY.get(serving, 1.0)) * reference_auc, 12)


def _read(folder: Path, columns: list[str]) -> pa.Table:
    return pads.dataset(parquet_files(folder), format="parquet").to_table(columns=columns)


def _slice_values(col: pa.ChunkedArray) -> np.ndarray | None:
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return None
    return np.asarray(pc.fill_null(col.cast(pa.string()), "(missing)").to_pylist(), dtype=object).astype(str)


def training_reference(run: Path) -> dict[str, Any]:
    """The run's training-time test figures (`train/metrics.json`), or {} when absent."""
    f = Path(run) / "train" / "metrics.json"
    if not f.exists():
        return {}
    test = json.loads(f.read_text()).get("evaluation", {}).get("splits", {}).get("test", {})
    return {k: test[k] for k in ("auc", "log_loss", "ece", "rows") if k in test}


def write_predict_report(run: Path, out: Path, label: str, cfg, facts: dict[str, Any]) -> dict[str, Any]:
    """Write `metrics.json`, `report.md` and `calibration.png` into `out`; return the headline metrics."""
    plan = RunModel.load(Path(run) / "train" / "model").plan
    have = set(pads.dataset(parquet_files(out / "parsed"), format="parquet").schema.names)
    feats = [f for f in slice_features(plan, cfg.slice_features) if f in have]  # a bucket feature has no raw column
    pred = _read(out / "predictions", [*KEY, SCORE, label])
    parsed = _read(out / "parsed", [*KEY, *feats])
    if pred.select(KEY) != parsed.select(KEY):  # Ray keeps file order; should it not, line the rows up
        pred = pred.sort_by([(k, "ascending") for k in KEY])
        parsed = parsed.sort_by([(k, "ascending") for k in KEY])
    y = pred.column(label).to_numpy().astype(np.float64)
    p = pred.column(SCORE).to_numpy()
    head = summary(y, p)
    bins = calibration(y, p)
    slices = {}
    for f in feats:
        values = _slice_values(parsed.column(f))
        if values is not None:
            slices[f] = slice_auc(y, p, values, top=5, min_rows=max(20, len(y) // 200))
    ref = training_reference(run)
    check = {}
    if "auc" in ref:
        loss = stated_auc_loss("fp32" if cfg.serving in ("as-trained", "eager", "exported") else cfg.serving, ref["auc"])
        delta = head["auc"] - ref["auc"]
        check = {"training_test_auc": ref["auc"], "auc_delta": delta, "stated_auc_loss": loss,
                 "within_stated": bool(-delta <= loss + 1e-6)}
    metrics = {"evaluation": {"splits": {"predict": head}, "calibration": {"predict": bins}, "slices": {"predict": slices}},
               "reference": ref, "serving_check": check,
               "serving": facts.get("serving"), "backend": facts.get("backend"),
               "rows": {k: facts[k] for k in ("rows_in", "rows_scored", "rows_quarantined")}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    plot_calibration(bins, out / "calibration.png", "calibration (predict)")
    lines = [f"# Predictions: {Path(run).name} on {Path(facts['input']).name}", "",
             f"Serving: {facts['serving']} ({facts['backend']}); {facts['mode']} with {facts['workers']} worker(s). "
             f"Rows: {facts['rows_in']:,} in, {facts['rows_scored']:,} scored, {facts['rows_quarantined']:,} quarantined"
             + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(facts['quarantine_reasons'].items()))})" if facts['quarantine_reasons'] else "")
             + ".", "", "## Metrics", ""]
    rows = [{"data": "predict", **head}] + ([{"data": "training test split", **ref}] if ref else [])
    lines += _table(rows, ["data", "rows", "auc", "log_loss", "ece", "observed_ctr", "mean_prediction"])
    if check:
        lines += ["", f"AUC {head['auc']:.6f} vs training-time test AUC {ref['auc']:.6f} (delta {check['auc_delta']:+.6f}); "
                  f"the plan states a loss of at most {check['stated_auc_loss']:.6f} for {cfg.serving} serving: "
                  + ("within." if check["within_stated"] else "**outside**.")]
    lines += ["", "## Calibration", "", "![calibration](calibration.png)", "",
              "## AUC by slice (most frequent raw values of the top features)", ""]
    for f, r in slices.items():
        lines += [f"**{f}**", ""] + _table(r, ["value", "rows", "ctr", "auc"]) + [""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"auc": head["auc"], "log_loss": head["log_loss"], "ece": head["ece"], "rows": head["rows"], **check}

"""The offline-evaluation notebooks, executed with nbclient against small finished runs.

The run folders are made through `jobs.runs.run_stage` (so manifests are real) with the stages'
own writers: `features.rank_outputs.write_outputs` (rank), `embeddings.planner.plan_stage` (plan),
`pipelines.report.write_report` with `pipelines.metrics` figures (CTR train) and
`pipelines.session_evaluate.write_report` with `pipelines.ranking_metrics` (session train). Only
the model fitting is replaced by seeded predictions, to keep this test within seconds.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from jobs.runs import run_stage

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["C1", "C2", "C3", "C4", "C5", "C6"]


def _rank(inputs, out):
    from features.config import RankConfig
    from features.outrank import FeatureScore, RankResult
    from features.rank_outputs import write_outputs

    scores = [0.09, 0.05, 0.031, 0.012, 0.004, 0.0005]
    feats = [FeatureScore(f, "categorical", 10 ** (i % 4 + 1), 1.0 - 0.01 * i, s * 1.1, s)
             for i, (f, s) in enumerate(zip(FEATURES, scores))]
    res = RankResult("label", ["0", "1"], 2000, "mi-permutation", True, feats,
                     selection=[(f.name, f.score, i < 4) for i, f in enumerate(feats)])
    write_outputs(out, res, RankConfig(), vocab_sizes={f: 10 ** (i % 4 + 1) + 2 for i, f in enumerate(FEATURES)})
    return {"rows_in": 2000, "rows_out": len(feats)}


def _ctr_train(inputs, out, seed: int = 0):
    from embeddings.spec import EmbeddingPlan
    from pipelines.evaluate import table_bytes
    from pipelines.metrics import calibration, slice_auc, summary
    from pipelines.report import write_report

    plan = EmbeddingPlan.load(inputs["plan"] / "embedding_plan.json")
    rng = np.random.default_rng(seed)
    ev = {"splits": {}, "calibration": {}, "slices": {}}
    for split in ("validation", "test"):
        y = (rng.random(1500) < 0.25).astype(np.int32)
        p = np.clip(0.25 + 0.25 * (y - 0.25) + rng.normal(0, 0.12, y.size), 0.01, 0.99)
        values = rng.integers(2, 7, y.size)
        ev["splits"][split] = summary(y, p)
        ev["calibration"][split] = calibration(y, p)
        ev["slices"][split] = {"C1": slice_auc(y, p, values, top=5, min_rows=20)}
    ev["tables"] = table_bytes(plan)
    ev["embedding_bytes"] = int(sum(t["bytes"] for t in ev["tables"]))
    ev["embedding_fp32_bytes"] = int(sum(t["fp32_bytes"] for t in ev["tables"]))
    ev["parameters"] = 12345
    training = {"mode": "single", "workers": 1, "steps": 40, "seconds": 3.0, "examples": 8000,
                "examples_per_s": 2666.0, "peak_rss_mb": 900.0, "checkpoint": "checkpoints/step_40"}
    history = {"train": [{"step": s, "loss": 0.6 - 0.002 * s} for s in range(0, 40, 5)],
               "validation": [{"step": 20, "auc": 0.70, "log_loss": 0.52}, {"step": 40, "auc": 0.74, "log_loss": 0.50}]}
    card = {"model": "dlrm", "config": {}, "data": "vocab/encoded", "rows": {"train": 8000}, "dense": [],
            "features": FEATURES, "artifact_bytes": 4096}
    write_report(out, {"training": training, "evaluation": ev, "artifact_bytes": 4096}, history, card)
    return {"rows_in": 8000, "test_auc": ev["splits"]["test"]["auc"]}


def _session_train(inputs, out, seed: int = 0):
    from pipelines.ranking_metrics import ranking_metrics
    from pipelines.session_evaluate import write_report

    rng = np.random.default_rng(seed)
    results = {}
    for model, scale in (("m2trec", 15.0), ("sasrec", 40.0), ("popularity", 120.0)):
        ranks = {"overall": 1 + rng.geometric(1 / scale, 400), "cold": 1 + rng.geometric(1 / (scale * 2), 60),
                 "sparse": 1 + rng.geometric(1 / (scale * 1.5), 90)}
        results[model] = {s: ranking_metrics(r, (10, 20)) for s, r in ranks.items()}
        results[model].update({"catalogue_items": 500, "embedding_bytes": int(scale * 1000),
                               "top1_category_acc": round(0.6 - scale / 400, 4)})
    results["m2trec"]["head_category_acc"] = 0.81
    write_report(results, out)
    return {"rows_in": 400}


@pytest.fixture(scope="module")
def ctr_run(tmp_path_factory) -> Path:
    from embeddings.config import EmbeddingsConfig
    from embeddings.planner import plan_stage

    run = tmp_path_factory.mktemp("runs") / "ctr-small"
    run_stage(run, "rank", _rank, inputs={}, config={})
    run_stage(run, "plan", partial(plan_stage, cfg=EmbeddingsConfig(compression_ratio=4)), inputs={"rank": run / "rank"}, config={})
    run_stage(run, "train", _ctr_train, inputs={"plan": run / "plan"}, config={})
    return run


@pytest.fixture(scope="module")
def session_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "sessions-small"
    run_stage(run, "train", _session_train, inputs={}, config={})
    return run


def execute(name: str, cwd: Path, **params) -> nbformat.NotebookNode:
    """Run notebooks/<name> with its `parameters` cell rewritten to `params` (papermill-style)."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb) -> tuple[str, list[bytes]]:
    """All text the notebook printed or displayed, and its PNG images."""
    text, images = [], []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.output_type == "stream":
                text.append(o.text)
            elif o.output_type in ("display_data", "execute_result"):
                text.append(o.data.get("text/plain", "") + o.data.get("text/markdown", "") + o.data.get("text/html", ""))
                if "image/png" in o.data:
                    images.append(base64.b64decode(o.data["image/png"]))
            elif o.output_type == "error":
                raise AssertionError(f"{o.ename}: {o.evalue}")
    return "\n".join(text), images


def test_ctr_notebook_shows_metrics_slices_calibration_bytes_ranking_and_tradeoff(ctr_run, tmp_path):
    m = json.loads((ctr_run / "train" / "metrics.json").read_text())
    ev = m["evaluation"]
    plan = json.loads((ctr_run / "plan" / "embedding_plan.json").read_text())
    curve = tmp_path / "compression_tradeoff.csv"
    curve.write_text("method,bytes,auc\ndense,400000,0.741\nhashing,40000,0.733\nhashing,10000,0.71\nqr,40000,0.737\n")
    nb = execute("ctr_run.ipynb", tmp_path, run_dir=str(ctr_run), tradeoff=str(curve), benchmarks_out="none")
    text, images = outputs(nb)
    assert len(images) == 6                      # curves, slices, calibration, bytes, ranking, trade-off
    assert all(img.startswith(b"\x89PNG") for img in images)
    test = ev["splits"]["test"]
    assert f"test: AUC {test['auc']:.4f}  log loss {test['log_loss']:.4f}  ECE {test['ece']:.4f}" in text
    assert f"validation: AUC {ev['splits']['validation']['auc']:.4f}" in text
    worst = min((r for r in ev["slices"]["test"]["C1"] if r["auc"] == r["auc"]), key=lambda r: r["auc"])
    assert f"weakest slice (test): C1 = {worst['value']}: AUC {worst['auc']:.4f} over {worst['rows']} rows" in text
    used = sum(t["bytes"] for t in plan["tables"])
    assert f"embedding bytes: {used:,} used" in text
    assert "top feature: C1 (score 0.0900); 6 features ranked" in text
    assert "Not available" not in text and "No compression trade-off table" not in text


def test_ctr_notebook_says_what_is_missing_for_a_partial_run(tmp_path):
    run = tmp_path / "runs" / "partial"
    run_stage(run, "rank", _rank, inputs={}, config={})
    nb = execute("ctr_run.ipynb", tmp_path, run_dir=str(run), tradeoff=None, benchmarks_out=str(tmp_path / "none"))
    text, images = outputs(nb)
    assert "**Not available:** `train/metrics.json`" in text
    assert "**Not available:** `plan/embedding_plan.json`" in text
    assert "No compression trade-off table" in text
    assert "top feature: C1" in text and len(images) == 1


def test_session_notebook_shows_recall_mrr_ndcg_by_slice_and_category_accuracy(session_run, tmp_path):
    results = json.loads((session_run / "train" / "metrics.json").read_text())
    nb = execute("session_run.ipynb", tmp_path, run_dir=str(session_run), k=20)
    text, images = outputs(nb)
    assert len(images) == 2                      # metrics by slice, category accuracy
    assert all(img.startswith(b"\x89PNG") for img in images)
    for model, r in results.items():
        o, c, s = r["overall"], r["cold"], r["sparse"]
        warm = (400 * o["recall@20"] - 60 * c["recall@20"] - 90 * s["recall@20"]) / 250   # derived exactly
        assert (f"{model}: Recall@20 {o['recall@20']:.4f}  MRR@20 {o['mrr@20']:.4f}  NDCG@20 {o['ndcg@20']:.4f}"
                f"  Recall@20 by slice: warm {warm:.4f}, sparse {s['recall@20']:.4f}, cold {c['recall@20']:.4f}") in text
    assert "head_category_acc" in text and "0.81" in text
    assert "test targets per slice: overall 400, warm 250, sparse 90, cold 60" in text

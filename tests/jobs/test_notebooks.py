"""The offline-evaluation notebooks, executed with nbclient against small finished runs.

The run folders are made by the real stage functions through `jobs.runs.run_stage` (so the
manifests are real too): CTR `plan` (embeddings.planner.plan_stage), `train`
(pipelines.ctr.trainer.train_stage, single-process) and session `train`
(pipelines.sessions.train.train_stage, M2TRec). The Spark stages are stood in for by their pandas
twins (tests/pipelines/encoded_data.py for `vocab`, pipelines.sessions.layout for `sessions`), and
`rank` by its own writer (features.rank_outputs) with fixed scores, to keep this test in seconds.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path

import nbformat
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nbclient import NotebookClient

from jobs.runs import run_stage

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["C1", "C2", "C4", "C7", "C8", "C10", "C11", "C14"]
SCORES = [0.09, 0.05, 0.031, 0.02, 0.012, 0.008, 0.004, 0.0005]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-core machine two spinning threads run far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _vocab(inputs, out):
    from tests.pipelines.encoded_data import encode_generated_ctr

    schema = encode_generated_ctr(inputs["raw"], out, features=FEATURES)
    # the Spark stage's id → value table (docs/stages.md: feature, value, id, count); here for C1 only
    table = pa.table({"feature": ["C1"] * 6, "value": [f"raw{i}" for i in range(2, 8)], "id": list(range(2, 8)),
                      "count": [100 - i for i in range(6)]})
    (out / "vocab").mkdir()
    pq.write_table(table, out / "vocab" / "part-0.parquet")
    return {"rows_in": sum(schema["rows"].values()), "rows_out": sum(schema["rows"].values())}


def _rank(inputs, out):
    from features.config import RankConfig
    from features.outrank import FeatureScore, RankResult
    from features.rank_outputs import write_outputs

    sizes = json.loads((inputs["vocab"] / "schema.json").read_text())["vocab_sizes"] if "vocab" in inputs else {}
    feats = [FeatureScore(f, "categorical", max(sizes.get(f, 12) - 2, 1), 1.0 - 0.01 * i, s * 1.1, s)
             for i, (f, s) in enumerate(zip(FEATURES, SCORES))]
    res = RankResult("label", ["0", "1"], 3000, "mi-permutation", True, feats,
                     selection=[(f.name, f.score, i < 6) for i, f in enumerate(feats)])
    write_outputs(out, res, RankConfig(), vocab_sizes=sizes or None)
    return {"rows_in": 3000, "rows_out": len(feats)}


def _ctr_train(inputs, out):
    from embeddings.config import EmbeddingsConfig
    from pipelines.runtime.config import TrainConfig
    from pipelines.ctr.trainer import train_stage

    cfg = TrainConfig(batch_size=256, epochs=1, checkpoint_every=100, log_every=2)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return train_stage(inputs, out, cfg, EmbeddingsConfig(), seed=0, show_progress=False)


def _session_train(inputs, out):
    from pipelines.runtime.config import ModelConfig, TrainConfig
    from pipelines.sessions.train import train_stage

    cfg = TrainConfig(model=ModelConfig(name="m2trec", hidden=16, layers=1, heads=2, max_length=10), epochs=1,
                      batch_size=256, dense_learning_rate=3e-3, device="cpu")
    cfg.ray.single_process = True
    summary = train_stage(inputs, out, cfg, seed=0)
    summary.pop("history", None)
    return summary


@pytest.fixture(scope="module")
def ctr_run(tmp_path_factory) -> Path:
    from embeddings.config import EmbeddingsConfig
    from embeddings.planner import plan_stage
    from features.synthetic import generate

    raw = tmp_path_factory.mktemp("ctr_raw")
    generate("ctr", rows=3000, seed=11, output=raw)
    run = tmp_path_factory.mktemp("runs") / "ctr-small"
    run_stage(run, "vocab", _vocab, inputs={"raw": raw}, config={})
    run_stage(run, "rank", _rank, inputs={"vocab": run / "vocab"}, config={})
    run_stage(run, "plan", partial(plan_stage, cfg=EmbeddingsConfig(compression_ratio=4)), inputs={"rank": run / "rank"}, config={})
    run_stage(run, "train", _ctr_train, inputs={"vocab": run / "vocab", "plan": run / "plan"}, config={})
    return run


@pytest.fixture(scope="module")
def session_run(tmp_path_factory) -> Path:
    from features.synthetic import generate
    from pipelines.sessions.layout import synthetic_layout

    raw = tmp_path_factory.mktemp("sessions_raw")
    truth = generate("sessions", rows=3000, seed=3, output=raw)
    run = tmp_path_factory.mktemp("runs") / "sessions-small"
    run_stage(run, "sessions", lambda i, out: synthetic_layout(raw / truth["file"], raw / truth["items_file"], out) and {},
              inputs={"raw": raw / truth["file"]}, config={})
    run_stage(run, "train", _session_train, inputs={"sessions": run / "sessions"}, config={})
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
    curve.write_text("dataset,method,bytes,auc\nctr,dense,400000,0.741\nctr,hashing,40000,0.733\nctr,hashing,10000,0.71\n"
                     "ctr,qr,40000,0.737\nml100k,dense,90000,0.80\nml100k,qr,9000,0.79\nml100k,int4,,\n")
    nb = execute("ctr_run.ipynb", tmp_path, run_dir=str(ctr_run), tradeoff=str(curve), benchmarks_out="none")
    text, images = outputs(nb)
    assert len(images) == 6                      # curves, slices, calibration, bytes, ranking, trade-off
    assert all(img.startswith(b"\x89PNG") for img in images)
    test = ev["splits"]["test"]
    assert f"test: AUC {test['auc']:.4f}  log loss {test['log_loss']:.4f}  ECE {test['ece']:.4f}" in text
    assert f"validation: AUC {ev['splits']['validation']['auc']:.4f}" in text
    slices = [(f, r) for f, rows in ev["slices"]["test"].items() for r in rows if r["auc"] == r["auc"]]
    assert {f for f, _ in slices} >= {"C1"}
    f, worst = min(slices, key=lambda fr: fr[1]["auc"])
    raw = f" (raw{worst['value']})" if f == "C1" and 2 <= worst["value"] <= 7 else ""
    assert f"weakest slice (test): {f} = {worst['value']}{raw}: AUC {worst['auc']:.4f} over {worst['rows']} rows" in text
    c1_ids = [r["value"] for g, r in slices if g == "C1" and 2 <= r["value"] <= 7]
    assert all(f"raw{v}" in text for v in c1_ids) and c1_ids      # ids shown with their raw values
    used = sum(t["bytes"] for t in plan["tables"])
    assert f"embedding bytes: {used:,} used" in text
    assert "top feature: C1 (score 0.0900); 8 features ranked" in text
    assert "Not available" not in text and "No compression trade-off table" not in text


def test_ctr_notebook_says_what_is_missing_for_a_partial_run(tmp_path):
    run = tmp_path / "runs" / "partial"
    run_stage(run, "rank", _rank, inputs={}, config={})
    bench = tmp_path / "bench"                      # the benchmark wrote only its picture
    bench.mkdir()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2], [0.7, 0.72])
    fig.savefig(bench / "compression_tradeoff.png")
    plt.close(fig)
    nb = execute("ctr_run.ipynb", tmp_path, run_dir=str(run), tradeoff=None, benchmarks_out=str(bench))
    text, images = outputs(nb)
    assert "**Not available:** `train/metrics.json`" in text
    assert "**Not available:** `plan/embedding_plan.json`" in text
    assert "top feature: C1" in text and len(images) == 2
    assert "The benchmark's own plot" in text and images[1] == (bench / "compression_tradeoff.png").read_bytes()


def test_session_notebook_shows_recall_mrr_ndcg_by_slice_and_category_accuracy(session_run, tmp_path):
    r = json.loads((session_run / "train" / "metrics.json").read_text())
    nb = execute("session_run.ipynb", tmp_path, run_dir=str(session_run), k=20)
    text, images = outputs(nb)
    assert len(images) == 2                      # metrics by slice, category accuracy
    assert all(img.startswith(b"\x89PNG") for img in images)
    o, c, s = r["overall"], r["cold"], r["sparse"]
    n_warm = o["n"] - c["n"] - s["n"]
    warm = (o["n"] * o["recall@20"] - c["n"] * c["recall@20"] - s["n"] * s["recall@20"]) / n_warm  # derived exactly
    assert (f"m2trec: Recall@20 {o['recall@20']:.4f}  MRR@20 {o['mrr@20']:.4f}  NDCG@20 {o['ndcg@20']:.4f}"
            f"  Recall@20 by slice: warm {warm:.4f}, sparse {s['recall@20']:.4f}, cold {c['recall@20']:.4f}") in text
    assert f"test targets per slice: overall {o['n']}, warm {n_warm}, sparse {s['n']}, cold {c['n']}" in text
    assert f"m2trec: head_category_acc {r['head_category_acc']:.4f}" in text
    assert f"top1_category_acc {r['top1_category_acc']:.4f}" in text
    assert f"m2trec: by the target's category** ({len(r['per_category'])} categories, {o['n']} test targets)" in text


def _readme_snippet() -> str:
    """The Python snippet of notebooks/README.md ("Run one by hand")."""
    text = (ROOT / "notebooks" / "README.md").read_text()
    return text.split(".venv/bin/python - <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]


def test_readme_snippet_keeps_the_other_parameters(ctr_run, tmp_path):
    import subprocess
    import sys

    code = _readme_snippet().replace("runs/sample-ctr/ctr_run.ipynb", str(tmp_path / "out.ipynb"))
    code = code.replace('"runs/sample-ctr"', f'"{ctr_run}"')
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]          # was: NameError: name 'tradeoff' is not defined
    text, images = outputs(nbformat.read(tmp_path / "out.ipynb", as_version=4))
    auc = json.loads((ctr_run / "train" / "metrics.json").read_text())["evaluation"]["splits"]["test"]["auc"]
    assert f"test: AUC {auc:.4f}" in text and "Not available" not in text and len(images) >= 5


def test_jupyter_execute_from_the_project_root_finds_a_relative_run_dir(ctr_run, tmp_path):
    """`jupyter execute notebooks/ctr_run.ipynb` runs the kernel in notebooks/; runs/<name> is the project's."""
    import shutil
    import subprocess

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "runs").mkdir()
    shutil.copytree(ctr_run, project / "runs" / "sample-ctr")
    shutil.copy(ROOT / "notebooks" / "ctr_run.ipynb", project / "notebooks" / "ctr_run.ipynb")
    jupyter = Path(__import__("sys").executable).parent / "jupyter"
    res = subprocess.run([str(jupyter), "execute", "--inplace", "notebooks/ctr_run.ipynb"], cwd=project,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]          # was: FileNotFoundError for notebooks/runs/sample-ctr
    text, images = outputs(nbformat.read(project / "notebooks" / "ctr_run.ipynb", as_version=4))
    auc = json.loads((ctr_run / "train" / "metrics.json").read_text())["evaluation"]["splits"]["test"]["auc"]
    assert f"test: AUC {auc:.4f}" in text and "Not available" not in text and len(images) >= 5

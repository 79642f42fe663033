"""`sparserec runs compare` and notebooks/compare_runs.ipynb on two small finished runs (plans of different
budgets, made by the real plan and train stages; the Spark stages stood in as in test_notebooks)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.errors import UserError
from jobs.cli import app
from jobs.runs import run_stage
from pipelines.ctr.run_compare import compare_runs
from tests.jobs.test_notebooks import _ctr_train, _rank, _vocab, execute, outputs

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    from embeddings.config import EmbeddingsConfig
    from embeddings.planner import plan_stage
    from features.synthetic import generate

    raw = tmp_path_factory.mktemp("ctr_raw")
    generate("ctr", rows=3000, seed=11, output=raw)
    runs = []
    for name, ratio in (("dense", 1.0), ("tight", 8.0)):
        run = tmp_path_factory.mktemp("runs") / name
        run_stage(run, "vocab", _vocab, inputs={"raw": raw}, config={})
        run_stage(run, "rank", _rank, inputs={"vocab": run / "vocab"}, config={})
        run_stage(run, "plan", partial(plan_stage, cfg=EmbeddingsConfig(compression_ratio=ratio)),
                  inputs={"rank": run / "rank"}, config={})
        run_stage(run, "train", _ctr_train, inputs={"vocab": run / "vocab", "plan": run / "plan"}, config={})
        runs.append(run)
    return runs


def test_compare_table_and_plot_hold_each_runs_figures(two_runs, tmp_path):
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["runs", "compare", *map(str, two_runs), "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "compare.json").read_text())
    assert [r["run"] for r in rows] == ["dense", "tight"]
    for r, run in zip(rows, two_runs):
        m = json.loads((run / "train" / "metrics.json").read_text())["evaluation"]["splits"]
        plan = json.loads((run / "plan" / "embedding_plan.json").read_text())
        assert r["test_auc"] == m["test"]["auc"] and r["val_auc"] == m["validation"]["auc"]
        assert r["test_ece"] == m["test"]["ece"] and r["plan_bytes"] == plan["total_bytes"]
        assert r["methods"].split(", ")[0] == f"{plan['tables'][0]['features'][0]} {plan['tables'][0]['method']}"
        assert set(r["stage_seconds"]) == {"vocab", "rank", "plan", "train"} and r["dsl"] == "off"
    assert rows[1]["plan_bytes"] < rows[0]["plan_bytes"]
    assert (out / "auc_vs_bytes.png").read_bytes().startswith(b"\x89PNG")
    table = (out / "compare.md").read_text()
    assert "| tight |" in table and f"{rows[1]['test_auc']:.4f}" in table


def test_compare_names_a_missing_run_folder(tmp_path):
    res = runner.invoke(app, ["runs", "compare", str(tmp_path / "nope")])
    assert isinstance(res.exception, UserError) and "nope: no such run folder" in str(res.exception)


def test_compare_notebook_shows_the_table_and_the_plot(two_runs, tmp_path):
    nb = execute("compare_runs.ipynb", tmp_path, run_dirs=[str(r) for r in two_runs])
    text, images = outputs(nb)
    rows = compare_runs(two_runs)
    best = max(rows, key=lambda r: r["test_auc"])
    assert f"best test AUC: {best['run']} {best['test_auc']:.4f} with {best['plan_bytes']:,} embedding bytes" in text
    assert "| dense |" in text and "| tight |" in text
    assert len(images) == 1 and images[0].startswith(b"\x89PNG")

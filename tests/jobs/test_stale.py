"""Stages made from an upstream output that changed since are shown as stale, and the report leaves them out."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.config import parse_config
from jobs.pipeline import Stage, StageFailed, run_pipeline
from jobs.runs import stale_stages
from pipelines.run_report import report_stage


@pytest.fixture()
def cfg(tmp_path: Path):
    (tmp_path / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    return parse_config({"dataset": {"path": "raw.tsv", "kind": "ctr", "roles": {"label": "label"}}}, base_dir=tmp_path)


def _graph(fail: str | None = None) -> list[Stage]:
    def make(name: str, figure: float):
        def build(ctx):
            def fn(inputs, out):
                if name == fail:
                    raise ValueError(f"{name} broke")
                (out / "x.txt").write_text(name)
                return {"rows_in": 2, "rows_out": 2, "auc": figure}
            return fn
        return build

    return [Stage("ingest", (), ("dataset",), make("ingest", 0.1), raw_inputs=lambda c: {"raw": c.dataset.path}),
            Stage("vocab", ("ingest",), ("features",), make("vocab", 0.2)),
            Stage("train", ("vocab",), ("training",), make("train", 0.7777))]


def test_failed_rerun_leaves_downstream_stale_and_runs_show_says_so(cfg, tmp_path):
    run = tmp_path / "run"
    run_pipeline(cfg, run, _graph())
    assert stale_stages(run) == {}
    cfg.dataset.name = "edited"                      # ingest re-runs, then vocab fails
    with pytest.raises(StageFailed):
        run_pipeline(cfg, run, _graph(fail="vocab"))
    assert stale_stages(run) == {"vocab": "made from an older ingest", "train": "its input vocab is stale"}
    res = CliRunner().invoke(app, ["runs", "show", str(run)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    rows = {ln.split("│")[1].strip(): ln for ln in res.output.splitlines() if ln.count("│") > 3}
    assert "current" in rows["ingest"] and "stale: made from an older ingest" in rows["vocab"]
    assert "stale: its input vocab is stale" in rows["train"]
    run_pipeline(cfg, run, _graph())                 # fixed: everything current again
    assert stale_stages(run) == {}


def test_report_leaves_stale_stages_out(cfg, tmp_path):
    run = tmp_path / "run"
    run_pipeline(cfg, run, _graph())
    cfg.dataset.name = "edited"
    with pytest.raises(StageFailed):
        run_pipeline(cfg, run, _graph(fail="vocab"))
    out = tmp_path / "report"
    out.mkdir()
    res = report_stage({s: run / s for s in ("ingest", "vocab", "train")}, out, run_name="r",
                       stale=lambda: stale_stages(run))
    text = (out / "report.md").read_text()
    assert "## ingest" in text and "## vocab" not in text and "## train" not in text
    assert "0.7777" not in text                      # the old model's figure is not claimed
    assert "Not included, stale" in text and "vocab (made from an older ingest)" in text
    assert res["stages"] == 1 and res["stale"] == ["train", "vocab"]

"""`sparserec predict`: scores a run's test period from the command line; user mistakes are one line."""

from __future__ import annotations

import json
import shutil

import pyarrow.dataset as pads
import pytest
import yaml
from typer.testing import CliRunner

from features.errors import UserError
from jobs.cli import app
from tests.pipelines.predict_run import DENSE, FEATURES

runner = CliRunner()


def _config(tmp_path, raw) -> str:
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({"name": "tiny", "dataset": {
        "path": str(raw), "format": "tsv", "kind": "ctr",
        "roles": {"label": "label", "timestamp": "ts", "dense": DENSE, "categorical": FEATURES}},
        "engine": {"spark": {"master": "local[2]"}}}))
    return str(f)


def test_a_pipeline_run_keeps_the_resolved_config_it_ran_with(tmp_path):
    from jobs.config import CONFIG_SNAPSHOT, load_config
    from jobs.pipeline import Stage, run_pipeline

    raw = tmp_path / "data" / "rows.tsv"
    raw.parent.mkdir()
    raw.write_text("label\tts\tI1\n1\t1\t2\n")
    src = tmp_path / "cfg" / "run.yaml"
    src.parent.mkdir()
    src.write_text(yaml.safe_dump({"name": "kept", "dataset": {"path": "../data/rows.tsv", "format": "tsv", "kind": "ctr",
                                                               "roles": {"label": "label", "timestamp": "ts", "dense": ["I1"]}},
                                   "seed": 5}))
    cfg = load_config(src)
    noop = Stage("noop", (), (), lambda ctx: lambda inputs, out: {"rows_in": 0, "rows_out": 0})
    run_pipeline(cfg, tmp_path / "runs" / "kept", [noop])
    kept = load_config(tmp_path / "runs" / "kept" / CONFIG_SNAPSHOT)
    assert kept.model_dump(mode="json") == cfg.model_dump(mode="json")
    assert kept.dataset.path == raw.resolve() and kept.seed == 5 and kept.dataset.roles.dense == ["I1"]


@pytest.mark.spark
@pytest.mark.slow
def test_predict_command_reads_the_runs_own_config_and_reports_the_auc(tiny_run, tmp_path):
    from jobs.config import load_config, save_config

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run["run"], run)
    save_config(load_config(_config(tmp_path, tiny_run["raw"])), run)   # as `sparserec run` leaves it
    out = tmp_path / "out"
    res = runner.invoke(app, ["predict", "--run", str(run), "--input", str(tiny_run["test_file"]), "--output", str(out),
                              "--single-process", "--serving", "int8"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["serving"] == "int8" and s["rows_in"] == s["rows_scored"] + s["rows_quarantined"]
    assert f"{s['rows_scored']:,} scored, {s['rows_quarantined']:,} quarantined" in res.output
    assert f"AUC {s['metrics']['auc']:.4f}" in res.output
    assert pads.dataset(str(out / "predictions")).count_rows() == s["rows_scored"]


def test_predict_errors_are_one_line(tmp_path):
    run = tmp_path / "run"
    (run / "train" / "model").mkdir(parents=True)
    res = runner.invoke(app, ["predict", "--run", str(tmp_path / "nope"), "--input", "x", "--output", str(tmp_path / "o")])
    assert isinstance(res.exception, UserError) and "no train/model/model.json" in str(res.exception)
    (run / "train" / "model" / "model.json").write_text("{}")
    (tmp_path / "in.tsv").write_text("a\n")
    res = runner.invoke(app, ["predict", "--run", str(run), "--input", str(tmp_path / "in.tsv"), "--output", str(tmp_path / "o")])
    assert isinstance(res.exception, UserError) and "no config.yaml" in str(res.exception)
    assert "re-run `sparserec run --config FILE` once" in str(res.exception)
    assert "\n" not in str(res.exception)
    res = runner.invoke(app, ["predict", "--run", str(run), "--input", str(tmp_path / "in.tsv"), "--output", str(tmp_path / "o"),
                              "--serving", "int2"])
    assert isinstance(res.exception, UserError) and "--serving int2: unknown" in str(res.exception)

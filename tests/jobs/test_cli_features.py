"""`sparserec features ingest | vocab | quality | sessions`: atomic stage folders with manifests, one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from features.errors import UserError
from jobs.cli import app

pytestmark = pytest.mark.spark
runner = CliRunner()


def _config(tmp_path, data) -> str:
    cfg = {"name": "t", "dataset": {"path": str(data), "format": "csv", "kind": "ctr",
                                    "roles": {"label": "y", "timestamp": "t", "categorical": ["c"]}},
           "engine": {"spark": {"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4,
                                "conf": {"spark.ui.enabled": "false"}}},
           "features": {"ingest": {"max_quarantine_share": 0.2}, "vocab": {"min_count": 1}}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_ingest_vocab_quality_commands_write_stage_folders(spark, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y,t,c\n" + "".join(f"{i % 2},{i},{'abc'[i % 3]}\n" for i in range(60)) + "x,1,a\n")
    cfg = _config(tmp_path, data)
    run = tmp_path / "runs" / "r1"
    res = runner.invoke(app, ["features", "ingest", "--config", cfg, "--output", str(run / "ingest")])
    assert res.exit_code == 0, res.output
    m = json.loads((run / "ingest" / "manifest.json").read_text())
    assert m["rows_in"] == 61 and m["summary"]["rows_quarantined"] == 1 and m["rows_out"] == 60
    assert "rows_quarantined" in res.output
    res = runner.invoke(app, ["features", "vocab", "--config", cfg, "--input", str(run / "ingest"), "--output", str(run / "vocab")])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "vocab" / "sizes.json").read_text()) == {"c": 5}
    res = runner.invoke(app, ["features", "quality", "--config", cfg, "--input", str(run / "ingest"), "--output", str(run / "quality")])
    assert res.exit_code == 0, res.output
    assert (run / "quality" / "quality.md").exists() and (run / "quality" / "manifest.json").exists()
    # unchanged inputs and settings: skipped
    res = runner.invoke(app, ["features", "vocab", "--config", cfg, "--input", str(run / "ingest"), "--output", str(run / "vocab")])
    assert res.exit_code == 0 and "skipped" in res.output


def test_missing_input_folder_is_a_user_error(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y,t,c\n1,1,a\n")
    res = runner.invoke(app, ["features", "quality", "--config", _config(tmp_path, data), "--input",
                              str(tmp_path / "nope"), "--output", str(tmp_path / "q")])
    assert isinstance(res.exception, UserError)
    assert "--input" in str(res.exception) and "nope" in str(res.exception) and "\n" not in str(res.exception)

"""The spark-submit entry point, launched with pyspark's real `spark-submit` against local[2]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.errors import UserError
from jobs.spark_features import launched_by_spark_submit, parse_stages

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_parse_stages_keeps_graph_order_and_rejects_others():
    applicable = ["ingest", "vocab", "quality", "rank"]
    assert parse_stages(None, applicable) == applicable
    assert parse_stages("rank,ingest", applicable) == ["ingest", "rank"]
    with pytest.raises(UserError, match="--stages: 'train' is not a Spark feature stage of this run; choose from: ingest, vocab, quality, rank"):
        parse_stages("ingest,train", applicable)
    assert not launched_by_spark_submit()


def test_bad_config_is_one_line_without_starting_spark(tmp_path):
    res = subprocess.run([sys.executable, "-m", "jobs.spark_features", "--config", str(tmp_path / "nope.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: config file not found; check the path."


@pytest.mark.spark
@pytest.mark.slow
def test_spark_submit_runs_ingest_with_the_submitted_master(tmp_path):
    from features.synthetic import generate

    truth = generate("ctr", rows=300, seed=5, output=tmp_path / "raw", bad_rows=3)
    cfg = {
        "name": "submitted", "output_dir": "runs",
        # never reachable: the run succeeds only because spark-submit's master (local[2]) is used
        "engine": {"spark": {"master": "spark://unused.invalid:7077", "shuffle_partitions": 1}},
        "features": {"ingest": {"partitions": 1, "max_quarantine_share": 0.05}},
        "dataset": {"path": f"raw/{truth['file']}", "kind": "ctr",
                    "roles": {"label": truth["label"], "timestamp": truth["timestamp"],
                              "dense": truth["dense"], "categorical": truth["categorical"]}},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(
        ["spark-submit", "--master", "local[2]", "--driver-memory", "1g", "--conf", "spark.ui.enabled=false",
         str(ROOT / "jobs" / "spark_features.py"), "--config", "run.yaml", "--run-id", "r1", "--stages", "ingest"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "master: from spark-submit" in res.stdout
    assert "done: ingest=ran" in res.stdout

    stage = tmp_path / "runs" / "r1" / "ingest"
    manifest = json.loads((stage / "manifest.json").read_text())
    bad = len(truth["bad_rows"])
    assert manifest["stage"] == "ingest" and manifest["run_id"] == "r1"
    assert manifest["rows_in"] == 300 + bad
    assert manifest["rows_out"] == manifest["summary"]["rows_ok"] == 300
    assert manifest["summary"]["rows_quarantined"] == bad

    import pyarrow.parquet as pq

    data = pq.read_table(stage / "data")
    assert data.num_rows == 300
    assert str(data.schema.field(truth["label"]).type).startswith("int")
    assert str(data.schema.field(truth["dense"][0]).type) == "double"
    assert str(data.schema.field(truth["categorical"][0]).type) == "string"
    assert sum(data.column(truth["label"]).to_pylist()) == round(truth["observed_rate"] * 300)
    assert pq.read_table(stage / "quarantine").num_rows == bad
    assert not (tmp_path / "runs" / "r1" / "vocab").exists()

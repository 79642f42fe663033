"""Every CLI stage command writes the run's own stage: `sparserec run` on the same config skips what they built."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from features.synthetic import generate
from jobs.cli import app

runner = CliRunner()


def _statuses(output: str) -> dict[str, str]:
    """stage -> ran | skipped, from `sparserec run`'s stage lines (`  skipped ingest  0.0s ...`)."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^\s*(ran|skipped)\s+(\w+)\s+[\d.]+s", output, re.M)}


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{args}: {res.output} {res.exception!r}"
    return res.output


@pytest.mark.spark
@pytest.mark.slow
def test_stages_built_by_the_cli_are_current_for_run(tmp_path: Path, spark):
    import torch

    torch.set_num_threads(1)
    truth = generate("ctr", rows=1500, seed=4, output=tmp_path / "data")
    settings = {
        "name": "cli", "seed": 0, "output_dir": "runs",
        "dataset": {"path": f"data/{truth['file']}", "format": "tsv", "kind": "ctr",
                    "roles": {"label": "label", "timestamp": "ts", "dense": truth["dense"][:2],
                              "categorical": truth["categorical"][:4]}},
        "engine": {"spark": {"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4,
                             "conf": {"spark.ui.enabled": "false"}}},
        "features": {"rank": {"pairs_top_k": 0}, "vocab": {"min_count": 1}},
        "embeddings": {"default_dim": 4},
        "training": {"epochs": 1, "batch_size": 256, "max_steps": 2, "ray": {"single_process": True},
                     "model": {"name": "dlrm", "dense_arch": [8], "over_arch": [8]}},
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    run = tmp_path / "runs" / "cli"
    c = str(cfg)
    _ok(["features", "ingest", "--config", c, "--output", str(run / "ingest")])
    _ok(["features", "vocab", "--config", c, "--output", str(run / "vocab")])          # --input defaults to run/ingest
    _ok(["features", "quality", "--config", c, "--input", str(run / "ingest"), "--output", str(run / "quality")])
    out = _ok(["features", "rank", "--config", c, "--input", str(run / "ingest"), "--output", str(run / "rank")])
    assert "ranked 6 features" in out
    _ok(["embeddings", "plan", "--config", c, "--output", str(run / "plan")])
    _ok(["train", "--config", c, "--encoded", str(run / "vocab"), "--plan", str(run / "plan"), "--output", str(run)])
    assert json.loads((run / "rank" / "manifest.json").read_text())["inputs"]["vocab"]["stage_fingerprint"]

    status = _statuses(_ok(["run", "--config", c]))
    assert status == {"ingest": "skipped", "vocab": "skipped", "quality": "skipped", "rank": "skipped",
                      "plan": "skipped", "train": "skipped", "report": "ran"}

    # the command skips what is current; a changed setting re-runs it, and the run then finds it current
    assert "(unchanged, skipped)" in _ok(["features", "quality", "--config", c, "--output", str(run / "quality")])
    settings["features"]["quality"] = {"top_values": 3}
    cfg.write_text(yaml.safe_dump(settings))
    assert "(unchanged, skipped)" not in _ok(["features", "quality", "--config", c, "--output", str(run / "quality")])
    assert len(json.loads((run / "quality" / "quality.json").read_text())["features"]["C1"]["top_values"]) == 3
    status = _statuses(_ok(["run", "--config", c]))
    assert status == {"ingest": "skipped", "vocab": "skipped", "quality": "skipped", "rank": "skipped",
                      "plan": "skipped", "train": "skipped", "report": "ran"}
    settings["features"]["quality"] = {"top_values": 4}          # a changed config: `run` re-runs that stage only
    cfg.write_text(yaml.safe_dump(settings))
    status = _statuses(_ok(["run", "--config", c]))
    assert status == {"ingest": "skipped", "vocab": "skipped", "quality": "ran", "rank": "skipped",
                      "plan": "skipped", "train": "skipped", "report": "ran"}


@pytest.mark.spark
@pytest.mark.slow
def test_session_stages_and_sessions_train_built_by_the_cli_are_current_for_run(tmp_path: Path, spark):
    import torch

    torch.set_num_threads(1)
    truth = generate("sessions", rows=1500, seed=3, output=tmp_path / "data")
    settings = {
        "name": "sess", "seed": 0, "output_dir": "runs",
        "dataset": {"path": f"data/{truth['file']}", "format": "csv", "kind": "sessions",
                    "roles": {"session_id": "session_id", "user_id": "user_id", "timestamp": "timestamp", "item_id": "item_id"},
                    "items": {"path": f"data/{truth['items_file']}", "format": "csv", "item_id": "item_id",
                              "categorical": ["category", "brand"]}},
        "engine": {"spark": {"master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 4,
                             "conf": {"spark.ui.enabled": "false"}}},
        "training": {"epochs": 1, "batch_size": 256, "ray": {"single_process": True}, "model": {"name": "popularity"}},
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    run, c = tmp_path / "runs" / "sess", str(cfg)
    _ok(["features", "ingest", "--config", c, "--output", str(run / "ingest")])
    _ok(["features", "sessions", "--config", c, "--output", str(run / "sessions")])
    _ok(["features", "quality", "--config", c, "--output", str(run / "quality")])
    train = ["sessions", "train", "--config", c, "--sessions", str(run / "sessions"), "--output", str(run / "train")]
    assert "; wrote" in _ok(train)
    assert "; unchanged, skipped" in _ok(train)                 # no longer re-trained on every call

    status = _statuses(_ok(["run", "--config", c]))
    assert status == {"ingest": "skipped", "sessions": "skipped", "quality": "skipped", "train": "skipped", "report": "ran"}
    assert "; wrote" in _ok(train + ["--epochs", "2"])          # a changed setting trains again

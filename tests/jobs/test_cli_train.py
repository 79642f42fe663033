"""`sparserec train`: trains on given stage outputs into a run folder; user mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from features.errors import UserError
from jobs.cli import app


def _config(tmp_path: Path, raw: Path) -> Path:
    cfg = {"name": "cli-train", "output_dir": str(tmp_path / "runs"),
           "dataset": {"path": str(raw), "format": "tsv", "kind": "ctr", "roles": {"label": "label", "timestamp": "ts"}},
           "training": {"batch_size": 256, "epochs": 1, "max_steps": 6, "checkpoint_every": 3,
                        "model": {"name": "dlrm", "dense_arch": [16], "over_arch": [16]}},
           "embeddings": {"default_dim": 8}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    from features.synthetic import generate
    from tests.pipelines.encoded_data import dense_plan, encode_generated_ctr

    root = tmp_path_factory.mktemp("cli_train")
    truth = generate("ctr", rows=3000, seed=2, output=root / "raw")
    schema = encode_generated_ctr(root / "raw", root / "vocab", features=["C1", "C2", "C7", "C8"])
    dense_plan(schema, dim=8).save(root / "embedding_plan.json")
    return {"root": root, "raw": root / "raw" / truth["file"]}


def test_train_on_given_stage_outputs_writes_the_train_stage(encoded, tmp_path: Path):
    import torch

    torch.set_num_threads(1)
    cfg = _config(tmp_path, encoded["raw"])
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--encoded", str(encoded["root"] / "vocab" / "encoded"),
                                   "--plan", str(encoded["root"] / "embedding_plan.json"), "--output", str(tmp_path / "run"),
                                   "--single-process"])
    assert res.exit_code == 0, res.output
    stage = tmp_path / "run" / "train"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["summary"]["steps"] == 6 and manifest["rows_in"] == 2400
    training = json.loads((stage / "metrics.json").read_text())["training"]
    assert training["mode"] == "single_process"
    # step 6 is both a checkpoint step and the end (max_steps): the end checkpoint gets its own name
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_00000006", "step_00000006_epoch"]
    assert training["checkpoint"] == "checkpoints/step_00000006_epoch"
    assert (stage / "model_card.md").exists()
    from jobs.config import load_config

    kept = load_config(tmp_path / "run" / "config.yaml", check_paths=False)   # what `predict --run` reads
    assert kept.training.max_steps == 6 and kept.training.ray.single_process and kept.dataset.path == encoded["raw"]


def test_user_mistakes_are_one_line_errors(encoded, tmp_path: Path):
    cfg = _config(tmp_path, encoded["raw"])
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--encoded", str(encoded["root"] / "vocab")])
    assert isinstance(res.exception, UserError) and "give both --encoded" in str(res.exception)
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--encoded", str(tmp_path), "--plan", str(tmp_path / "x.json")])
    assert isinstance(res.exception, UserError) and "no schema.json and encoded/" in str(res.exception)
    assert "\n" not in str(res.exception)

"""`sparserec run` on a small generated CTR dataset: every real stage, then a skipping re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from features.synthetic import generate
from jobs.config import load_config
from jobs.pipeline import run_pipeline
from jobs.stages import graph_for


@pytest.mark.spark
@pytest.mark.slow
def test_whole_ctr_run_then_skip(tmp_path: Path, spark):
    truth = generate("ctr", rows=4000, seed=2, output=tmp_path / "data", bad_rows=3)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "name": "e2e", "seed": 0, "output_dir": "runs",
        "dataset": {"path": f"data/{truth['file']}", "format": "tsv", "kind": "ctr",
                    "roles": {"label": "label", "timestamp": "ts", "dense": truth["dense"][:4],
                              "categorical": truth["categorical"][:8] + ["C10", "C11"],
                              "user_id": "C10", "item_id": "C11"}},
        "features": {"rank": {"pairs_top_k": 4}},
        "store": {"enabled": True},
        "embeddings": {"compression_ratio": 4},
        "training": {"epochs": 1, "batch_size": 256, "ray": {"single_process": True, "num_workers": 1}},
    }))
    cfg = load_config(cfg_file)
    run_dir = cfg.output_dir / "e2e"
    out = run_pipeline(cfg, run_dir, graph_for(cfg), spark=spark)
    names = [o.stage for o in out]
    assert names == ["ingest", "vocab", "quality", "rank", "aggregates", "store", "plan", "train", "report"]
    assert all(o.status == "ran" for o in out)
    ingest = json.loads((run_dir / "ingest" / "manifest.json").read_text())
    assert ingest["rows_in"] == 4003 and ingest["summary"]["rows_quarantined"] == 3
    metrics = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert "auc" in json.dumps(metrics)
    plan = json.loads((run_dir / "plan" / "embedding_plan.json").read_text())
    assert plan["budget_bytes"] and plan["total_bytes"] <= plan["budget_bytes"]
    report = (run_dir / "report" / "report.md").read_text()
    for section in ("## ingest", "## quality", "## rank", "## train"):
        assert section in report
    assert list((run_dir / "report").glob("*.png"))
    again = run_pipeline(cfg, run_dir, graph_for(cfg), spark=spark)
    assert [o.status for o in again] == ["skipped"] * len(names)
    _stage_commands_find_the_run_current(cfg_file, run_dir)
    cfg.training.epochs = 2
    again = run_pipeline(cfg, run_dir, graph_for(cfg), spark=spark)
    assert [o.status for o in again if o.status == "ran"] == ["ran", "ran"]     # train and report only
    assert [o.stage for o in again if o.status == "ran"] == ["train", "report"]


def _stage_commands_find_the_run_current(cfg_file: Path, run_dir: Path) -> None:
    """Each CLI stage command is `run --only` that skips: on the run's folders it rebuilds nothing."""
    from typer.testing import CliRunner

    from jobs.cli import app

    c, r = str(cfg_file), str(run_dir)
    commands = {
        "ingest": ["features", "ingest", "--config", c, "--output", f"{r}/ingest"],
        "vocab": ["features", "vocab", "--config", c, "--output", f"{r}/vocab"],
        "quality": ["features", "quality", "--config", c, "--input", f"{r}/ingest", "--output", f"{r}/quality"],
        "rank": ["features", "rank", "--config", c, "--input", f"{r}/ingest", "--output", f"{r}/rank"],
        "aggregates": ["features", "aggregates", "--config", c, "--ingest", f"{r}/ingest", "--output", f"{r}/aggregates"],
        "store": ["features", "register", "--config", c, "--aggregates", f"{r}/aggregates", "--vocab", f"{r}/vocab",
                  "--rank", f"{r}/rank", "--output", f"{r}/store"],
        "plan": ["embeddings", "plan", "--config", c, "--output", f"{r}/plan"],
        "train": ["train", "--config", c, "--encoded", f"{r}/vocab", "--plan", f"{r}/plan", "--output", r],
    }
    before = {s: json.loads((run_dir / s / "manifest.json").read_text())["started_at"] for s in commands}
    said = {"ingest": "unchanged, skipped", "vocab": "unchanged, skipped", "quality": "unchanged, skipped",
            "rank": "skipped (use --force", "aggregates": "skipped (unchanged)", "store": "not re-applied",
            "plan": "unchanged, skipped", "train": "skipped train"}
    for stage, args in commands.items():
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, f"{stage}: {res.output} {res.exception!r}"
        assert said[stage] in " ".join(res.output.split()), f"{stage}: {res.output}"
    after = {s: json.loads((run_dir / s / "manifest.json").read_text())["started_at"] for s in commands}
    assert after == before

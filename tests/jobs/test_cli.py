"""The `sparserec` CLI: --help everywhere, one-line errors, the generate and config commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from jobs.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _walk(cmd, path: tuple[str, ...] = ()):
    yield path
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
        for name, sub in cmd.commands.items():
            yield from _walk(sub, path + (name,))


def test_every_command_has_help():
    root = typer.main.get_command(app)
    paths = list(_walk(root))
    assert ("generate",) in paths and ("config", "validate") in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_generate_writes_data_and_truth(tmp_path):
    res = runner.invoke(app, ["generate", "interactions", "--rows", "500", "--seed", "1", "--output", str(tmp_path)])
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["rows"] == 500 and (tmp_path / "interactions.csv").exists()


def test_config_show_prints_defaults():
    res = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "sample_ctr.yaml")])
    assert res.exit_code == 0, res.output
    assert "min_count: 2" in res.output and "kind: ctr" in res.output


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_user_error_is_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: {path: x.tsv, kind: ctr, roles: {label: y}}\ntraining: {epoch: 1}\n")
    res = _cli("config", "validate", str(cfg), cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown key 'training.epoch'" in lines[0]
    res = _cli("generate", "nope", "--output", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "unknown dataset kind 'nope'" in res.stderr

"""Resuming from checkpoints another user wrote is refused (they are unpickled) unless --trust-checkpoint."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

import jobs.trust
from jobs.cli import app
from jobs.runs import WORK_DIR, run_stage
from jobs.trust import UntrustedCheckpointError, check_owned


def _train_like(calls: list[str], fail: bool):
    def fn(inputs, out, work_dir: Path):
        calls.append("resumed" if (work_dir / "step_1" / ".metadata").exists() else "fresh")
        (work_dir / "step_1").mkdir(parents=True, exist_ok=True)
        (work_dir / "step_1" / ".metadata").write_bytes(b"pickle")
        if fail:
            raise RuntimeError("killed")
        (out / "done").write_text("1")
        return {}
    return fn


def test_foreign_checkpoints_are_refused_unless_trusted(tmp_path, monkeypatch):
    run, calls = tmp_path / "run", []
    with pytest.raises(RuntimeError, match="killed"):
        run_stage(run, "train", _train_like(calls, fail=True), {}, {"k": 1})
    work = next((run / WORK_DIR).iterdir())
    real_uid = os.getuid()
    monkeypatch.setattr(jobs.trust.os, "getuid", lambda: real_uid + 4242)   # as if another user wrote the folder
    with pytest.raises(UntrustedCheckpointError, match=rf"{work}: cannot resume from it, .* belongs to another user "
                                                       rf"\(uid {real_uid}\).*--trust-checkpoint"):
        run_stage(run, "train", _train_like(calls, fail=False), {}, {"k": 1})
    assert calls == ["fresh"] and not (run / "train").exists()
    run_stage(run, "train", _train_like(calls, fail=False), {}, {"k": 1}, trust_checkpoint=True)
    assert calls == ["fresh", "resumed"] and (run / "train" / "done").exists()


def test_own_checkpoints_resume_without_a_flag(tmp_path):
    run, calls = tmp_path / "run", []
    with pytest.raises(RuntimeError):
        run_stage(run, "train", _train_like(calls, fail=True), {}, {"k": 1})
    run_stage(run, "train", _train_like(calls, fail=False), {}, {"k": 1})
    assert calls == ["fresh", "resumed"]
    check_owned(tmp_path / "missing")                                        # nothing to resume from: fine


def test_error_pickles_and_flag_is_offered():
    err = UntrustedCheckpointError(Path("r/.checkpoints/t"), Path("r/.checkpoints/t/.metadata"), 7)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    for cmd in (["run", "--help"], ["train", "--help"]):
        assert "--trust-checkpoint" in CliRunner().invoke(app, cmd, env={"COLUMNS": "200"}).output

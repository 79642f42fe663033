"""Run folders are atomic: a stage that fails or is killed half-way leaves no partial output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.runs import MANIFEST, Manifest, list_runs, read_manifests, run_stage, stage_is_current

ROOT = Path(__file__).resolve().parents[2]


def _copy_upper(inputs, out):
    text = inputs["raw"].read_text()
    (out / "upper.txt").write_text(text.upper())
    return {"rows_in": len(text.splitlines()), "rows_out": len(text.splitlines()), "note": "ok"}


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    p = tmp_path / "raw.txt"
    p.write_text("a\nb\nc\n")
    return p


def test_stage_writes_output_and_manifest(tmp_path, raw):
    run = tmp_path / "runs" / "r1"
    m = run_stage(run, "upper", _copy_upper, {"raw": raw}, {"k": 1}, seed=3)
    assert (run / "upper" / "upper.txt").read_text() == "A\nB\nC\n"
    d = json.loads((run / "upper" / MANIFEST).read_text())
    assert d["rows_in"] == 3 and d["rows_out"] == 3 and d["seed"] == 3
    assert d["summary"] == {"note": "ok"}
    assert d["inputs"]["raw"]["bytes"] == 6 and len(d["inputs"]["raw"]["sha256"]) == 64
    assert "pydantic" in d["libraries"] and d["seconds"] >= 0
    assert m.skipped is False and not list(run.glob(".tmp-*"))


def test_unchanged_stage_is_skipped_and_changed_one_reruns(tmp_path, raw):
    run = tmp_path / "r"
    calls = []

    def fn(inputs, out):
        calls.append(1)
        return _copy_upper(inputs, out)

    run_stage(run, "upper", fn, {"raw": raw}, {"k": 1})
    assert run_stage(run, "upper", fn, {"raw": raw}, {"k": 1}).skipped
    assert stage_is_current(run, "upper", {"raw": raw}, {"k": 1})
    assert len(calls) == 1
    run_stage(run, "upper", fn, {"raw": raw}, {"k": 2})          # config changed
    raw.write_text("x\n")                                         # input changed
    assert not stage_is_current(run, "upper", {"raw": raw}, {"k": 2})
    run_stage(run, "upper", fn, {"raw": raw}, {"k": 2})
    run_stage(run, "upper", fn, {"raw": raw}, {"k": 2}, force=True)
    assert len(calls) == 4
    assert (run / "upper" / "upper.txt").read_text() == "X\n"


def test_failed_stage_leaves_previous_output_untouched(tmp_path, raw):
    run = tmp_path / "r"
    run_stage(run, "upper", _copy_upper, {"raw": raw}, {"k": 1})
    before = (run / "upper" / MANIFEST).read_text()

    def boom(inputs, out):
        (out / "upper.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run_stage(run, "upper", boom, {"raw": raw}, {"k": 2})
    assert (run / "upper" / "upper.txt").read_text() == "A\nB\nC\n"
    assert (run / "upper" / MANIFEST).read_text() == before
    assert not list(run.glob(".tmp-*"))


def test_downstream_fingerprint_follows_upstream(tmp_path, raw):
    run = tmp_path / "r"
    run_stage(run, "upper", _copy_upper, {"raw": raw}, {"k": 1})

    def count(inputs, out):
        n = len((inputs["upper"] / "upper.txt").read_text().splitlines())
        (out / "n.txt").write_text(str(n))
        return {"rows_out": n}

    run_stage(run, "count", count, {"upper": run / "upper"}, {})
    assert stage_is_current(run, "count", {"upper": run / "upper"}, {})
    run_stage(run, "upper", _copy_upper, {"raw": raw}, {"k": 9})
    assert not stage_is_current(run, "count", {"upper": run / "upper"}, {})
    # "upper" ran again after "count": manifests come in the order the stages ran
    assert [m.stage for m in read_manifests(run)] == ["count", "upper"]
    assert list_runs(tmp_path) == [run]


KILLED_STAGE = """
import sys, time
from pathlib import Path
from jobs.runs import run_stage
def slow(inputs, out):
    (out / "part-0").write_text("half of the output")
    Path(sys.argv[2]).write_text("started")
    time.sleep(60)
    (out / "part-1").write_text("rest")
    return {}
run_stage(Path(sys.argv[1]), "slow", slow, {}, {})
"""


def test_stage_killed_half_way_leaves_no_partial_output(tmp_path):
    run = tmp_path / "r"
    marker = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, str(run), str(marker)], env=env)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the stage never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "slow").exists()
    assert len(list(run.glob(".tmp-slow-*"))) == 1      # the debris is only ever in a temp folder
    run_stage(run, "slow", lambda i, o: (o / "done").write_text("y") and {}, {}, {"x": 1})
    assert (run / "slow" / "done").exists()
    assert not list(run.glob(".tmp-slow-*"))             # and the next run sweeps it away


def test_manifest_round_trip(tmp_path, raw):
    run = tmp_path / "r"
    m = run_stage(run, "upper", _copy_upper, {"raw": raw}, {"k": 1})
    m2 = Manifest.read(run / "upper")
    assert m2.fingerprint == m.fingerprint and m2.rows_in == 3

"""One writer per run folder: a second run stops at once (or waits), and the temp sweep spares live owners."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.run_lock import RunLockedError, run_lock, stale_temps

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}

HOLDER = """
import sys, time
from pathlib import Path
from jobs.run_lock import run_lock
with run_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2]).write_text(repr(time.time()))
"""

WAITER = """
import sys, time
from pathlib import Path
from jobs.run_lock import run_lock
with run_lock(Path(sys.argv[1]), wait=True, on_wait=lambda h: print("waiting for", h["pid"], flush=True)):
    print("got", repr(time.time()), flush=True)
"""

SLOW_STAGE = """
import sys, time
from pathlib import Path
from jobs.runs import run_stage
def slow(inputs, out):
    Path(sys.argv[2]).write_text("started")
    time.sleep(60)
    return {}
run_stage(Path(sys.argv[1]), "slow", slow, {}, {})
"""


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def test_second_run_on_the_same_folder_stops_at_once_naming_the_holder(tmp_path):
    (tmp_path / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: same\noutput_dir: {tmp_path / 'runs'}\n"
                   "dataset: {path: raw.tsv, kind: ctr, roles: {label: label, categorical: [C1]}}\n")
    marker = tmp_path / "held"
    holder = _start(HOLDER, tmp_path / "runs" / "same", marker, 60)
    try:
        _wait_for(marker)
        t0 = time.time()
        res = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--config", str(cfg)], cwd=tmp_path,
                             capture_output=True, text=True, env=ENV, timeout=120)
        assert res.returncode == 2, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, res.stderr
        assert f"pid {holder.pid}" in lines[0] and "started 20" in lines[0] and "--wait-lock" in lines[0]
        assert time.time() - t0 < 60                           # no engine was started
        assert not (tmp_path / "runs" / "same" / "ingest").exists()
    finally:
        holder.kill()
        holder.wait()


def test_wait_lock_queues_behind_the_holder(tmp_path):
    run = tmp_path / "r"
    marker = tmp_path / "held"
    holder = _start(HOLDER, run, marker, 1.5)
    _wait_for(marker)
    waiter = _start(WAITER, run)
    out, err = waiter.communicate(timeout=60)
    holder.wait(timeout=60)
    assert waiter.returncode == 0, err
    assert f"waiting for {holder.pid}" in out
    got = float(out.split("got ")[1])
    released = float(marker.read_text())
    assert got >= released


def test_lock_is_released_when_the_holder_is_killed_and_reentrant_in_one_process(tmp_path):
    run = tmp_path / "r"
    marker = tmp_path / "held"
    holder = _start(HOLDER, run, marker, 60)
    _wait_for(marker)
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        with run_lock(run):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(run):
        with run_lock(run):                                     # the pipeline holds it, run_stage takes it again
            pass


def test_temp_sweep_spares_a_live_owner_and_removes_a_dead_one(tmp_path):
    run = tmp_path / "r"
    marker = tmp_path / "started"
    proc = _start(SLOW_STAGE, run, marker)
    try:
        _wait_for(marker)
        live = list(run.glob(".tmp-slow-*"))
        assert len(live) == 1 and f"-{proc.pid}-" in live[0].name
        assert stale_temps(run, "slow") == []                   # its owner is alive: never swept
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert stale_temps(run, "slow") == live                     # owner dead: swept by the next run
    reused = run / f".tmp-slow-{os.getpid()}-1-abcdef12"       # our pid, another start time: a reused pid
    reused.mkdir()
    legacy = run / ".tmp-slow-0a1b2c3d"                         # written before owners were recorded
    legacy.mkdir()
    assert stale_temps(run, "slow") == sorted([*live, reused, legacy])


def test_run_locked_error_pickles():
    err = RunLockedError(Path("runs/x"), {"pid": 7, "host": "h", "started_at": "2026-01-01T00:00:00+00:00"})
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and "pid 7" in str(back)

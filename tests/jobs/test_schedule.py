"""Schedules: due times at fixed clocks, collapsed missed runs, the overlap lock, and file errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.errors import ConfigError
from jobs.schedule import StateStore, due_since, entry_lock_path, load_schedule, run_due

ROOT = Path(__file__).resolve().parents[2]


def t(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


def write_schedule(folder: Path, entries: str) -> Path:
    cfg = folder / "run.yaml"
    (folder / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    cfg.write_text("name: s\ndataset:\n  path: raw.tsv\n  kind: ctr\n  roles: {label: label}\n")
    f = folder / "schedules.yaml"
    f.write_text("schedules:\n" + textwrap.indent(textwrap.dedent(entries), "  "))
    return f


EVERY_15 = """\
- name: quarter
  cron: "*/15 * * * *"
  job: validate
  config: run.yaml
"""
DAILY_2AM = """\
- name: nightly
  cron: "0 2 * * *"
  job: run
  config: run.yaml
  address: http://127.0.0.1:8265
"""


def test_every_15_minutes_fires_at_the_quarter_hours():
    assert due_since("*/15 * * * *", t(1, 10, 0), t(1, 10, 14)).fires == 0
    d = due_since("*/15 * * * *", t(1, 10, 0), t(1, 10, 15))
    assert (d.fires, d.fire_at) == (1, t(1, 10, 15))
    d = due_since("*/15 * * * *", t(1, 10, 15), t(1, 10, 29))
    assert not d.is_due


def test_daily_at_2am_and_missed_days_collapse():
    assert not due_since("0 2 * * *", t(1, 2, 30), t(2, 1, 59)).is_due
    d = due_since("0 2 * * *", t(1, 2, 30), t(2, 2, 0))
    assert (d.fires, d.fire_at) == (1, t(2, 2, 0))
    d = due_since("0 2 * * *", t(1, 2, 30), t(5, 9, 0))       # 2, 3, 4, 5 March missed
    assert (d.fires, d.fire_at) == (4, t(5, 2, 0))


def test_run_due_arms_then_runs_once_for_missed_times_then_waits(tmp_path):
    f = write_schedule(tmp_path, EVERY_15 + DAILY_2AM)
    calls: list[str] = []

    def runner(entry):
        calls.append(entry.name)
        return "submitted", f"job-{len(calls)}", "cmd"

    first = run_due(f, now=t(1, 10, 0), runner=runner)
    assert [(o.name, o.action) for o in first] == [("quarter", "armed"), ("nightly", "armed")]
    assert calls == []
    out = run_due(f, now=t(1, 11, 7), runner=runner)             # 10:15, 10:30, 10:45, 11:00 missed
    assert [(o.name, o.action, o.fires) for o in out] == [("quarter", "submitted", 4), ("nightly", "not-due", 0)]
    assert out[0].fire_at == t(1, 11, 0).isoformat() and out[0].job_id == "job-1"
    assert calls == ["quarter"]
    assert [o.action for o in run_due(f, now=t(1, 11, 10), runner=runner)] == ["not-due", "not-due"]
    dry = run_due(f, now=t(2, 2, 0), runner=runner, dry_run=True)
    assert [(o.action, o.fires) for o in dry] == [("due", 60), ("due", 1)]
    assert calls == ["quarter"]                                     # a dry run submits nothing ...
    out = run_due(f, now=t(2, 2, 0), runner=runner)               # ... and changes no state
    assert [(o.action, o.fires) for o in out] == [("submitted", 60), ("submitted", 1)]
    state = json.loads((tmp_path / ".schedule-state.json").read_text())
    assert state["nightly"]["last_fire"] == t(2, 2, 0).isoformat() and state["nightly"]["last_job_id"] == "job-3"
    assert state["quarter"]["fires_collapsed"] == 60
    assert not list(tmp_path.glob("*.tmp"))                          # written by an atomic rename


def test_failed_submission_is_retried_at_the_next_run_due(tmp_path):
    from jobs.submit import SubmitError

    f = write_schedule(tmp_path, DAILY_2AM)
    run_due(f, now=t(1, 0, 0))

    def down(entry):
        raise SubmitError("--address x: cannot reach the Ray dashboard")

    out = run_due(f, now=t(1, 2, 5), runner=down)
    assert out[0].action == "failed" and "retried next time" in out[0].detail
    out = run_due(f, now=t(1, 2, 10), runner=lambda e: ("submitted", "j", "cmd"))
    assert (out[0].action, out[0].fire_at) == ("submitted", t(1, 2, 0).isoformat())


def test_a_ray_job_still_running_on_the_cluster_is_not_submitted_again(tmp_path):
    f = write_schedule(tmp_path, EVERY_15.replace("job: validate", "job: run\n  address: http://127.0.0.1:1"))
    run_due(f, now=t(1, 10, 0))
    jobs = iter(["job-1", "job-2"])
    submit = lambda e: ("submitted", next(jobs), "cmd")
    asked: list[str] = []

    def status(state):
        return lambda entry, job_id: (asked.append(job_id), state)[1]

    assert run_due(f, now=t(1, 10, 15), runner=submit, status_of=status("RUNNING"))[0].job_id == "job-1"
    out = run_due(f, now=t(1, 10, 30), runner=submit, status_of=status("RUNNING"))
    assert (out[0].action, out[0].job_id, asked) == ("skipped", "job-1", ["job-1"])
    assert "still running" in out[0].detail
    out = run_due(f, now=t(1, 10, 35), runner=submit, status_of=status("SUCCEEDED"))   # 10:30 was kept
    assert (out[0].action, out[0].job_id, out[0].fire_at) == ("submitted", "job-2", t(1, 10, 30).isoformat())


def test_local_entry_runs_the_command_in_a_subprocess(tmp_path):
    f = write_schedule(tmp_path, EVERY_15)
    run_due(f, now=t(1, 10, 0))
    out = run_due(f, now=t(1, 10, 15))                               # real runner: `config validate` locally
    assert out[0].action == "ran", out[0].detail
    assert StateStore(f).read()["quarter"]["last_action"] == "ran"


def test_overlapping_run_due_processes_skip_the_running_entry(tmp_path):
    f = write_schedule(tmp_path, EVERY_15)
    run_due(f, now=t(1, 10, 0))
    started = tmp_path / "started"
    slow = textwrap.dedent(f"""
        import time, pathlib
        from datetime import datetime, timezone
        from jobs.schedule import run_due
        def runner(entry):
            pathlib.Path({str(started)!r}).write_text("x")
            time.sleep(4)
            return "ran", None, "slow"
        out = run_due(pathlib.Path({str(f)!r}), now=datetime(2026, 3, 1, 10, 20, tzinfo=timezone.utc), runner=runner)
        print(out[0].action)
    """)
    first = subprocess.Popen([sys.executable, "-c", slow], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run-due never started its job"
            time.sleep(0.05)
        calls: list[str] = []
        second = run_due(f, now=t(1, 10, 21), runner=lambda e: (calls.append(e.name), ("ran", None, ""))[1])
        assert [(o.name, o.action) for o in second] == [("quarter", "skipped")]
        assert calls == []
        assert "still holds its lock" in second[0].detail
    finally:
        stdout, _ = first.communicate(timeout=60)
    assert stdout.strip() == "ran"
    assert StateStore(f).read()["quarter"]["last_detail"] == "slow"
    assert entry_lock_path(f, "quarter").exists()
    # the lock is free again: the next due time runs
    assert run_due(f, now=t(1, 10, 30), runner=lambda e: ("ran", None, ""))[0].action == "ran"


@pytest.mark.parametrize("entry, message", [
    ('- name: bad\n  cron: "61 * * * *"\n  config: run.yaml\n',
     "entry 1 'bad': key 'cron': '61 * * * *' is not a valid cron expression"),
    ('- name: four\n  cron: "0 2 * *"\n  config: run.yaml\n',
     "entry 1 'four': key 'cron': '0 2 * *' is not a valid cron expression"),
    ('- name: typo\n  cron: "0 2 * * *"\n  config: run.yaml\n  adress: x\n',
     "entry 1 'typo': unknown key 'adress'; allowed: name, cron, job, config, address"),
    ('- name: job\n  cron: "0 2 * * *"\n  config: run.yaml\n  job: trian\n',
     "entry 1 'job': key 'job': unknown job 'trian'; choose one of run, features, validate"),
    ('- name: noconf\n  cron: "0 2 * * *"\n', "entry 1 'noconf': key 'config' is missing"),
    ('- name: gone\n  cron: "0 2 * * *"\n  config: missing.yaml\n', "entry 1 'gone': key 'config': "),
])
def test_bad_entries_are_one_line_errors_naming_file_and_entry(tmp_path, entry, message):
    f = write_schedule(tmp_path, entry)
    with pytest.raises(ConfigError) as err:
        load_schedule(f)
    text = str(err.value)
    assert text.startswith(f"{f}: ") and message in text and "\n" not in text


def test_duplicate_names_and_unknown_top_level_keys_are_rejected(tmp_path):
    f = write_schedule(tmp_path, EVERY_15 + EVERY_15)
    with pytest.raises(ConfigError, match="two entries are named 'quarter'"):
        load_schedule(f)
    f.write_text("schedule: []\n")
    with pytest.raises(ConfigError, match="unknown key 'schedule'; allowed: schedules"):
        load_schedule(f)


def test_the_bundled_schedule_is_valid():
    sched = load_schedule(ROOT / "jobs" / "schedules.yaml")
    assert [e.name for e in sched.schedules] == ["ctr-nightly", "sessions-features-hourly"]
    assert all(e.config.exists() for e in sched.schedules)


def test_cli_run_due_dry_run_and_list(tmp_path):
    from jobs.cli import app

    f = write_schedule(tmp_path, EVERY_15)
    runner = CliRunner()
    res = runner.invoke(app, ["schedule", "run-due", "--file", str(f), "--now", "2026-03-01T10:00"])
    assert res.exit_code == 0 and "quarter: armed - first run at 2026-03-01T10:15:00+00:00" in res.output
    res = runner.invoke(app, ["schedule", "run-due", "--file", str(f), "--now", "2026-03-01T10:31", "--dry-run", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output.strip())["fires"] == 2
    res = runner.invoke(app, ["schedule", "list", "--file", str(f), "--now", "2026-03-01T10:31"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "*/15 * * * *" in res.output and "2026-03-01T10:45:00+00:00" in res.output

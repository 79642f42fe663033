"""Schedules: cron entries in a YAML file, submitted when due by `sparserec schedule run-due`.

Any scheduler (a crontab line every few minutes, systemd timers, Airflow) calls `run-due`; it
submits each entry whose cron time has passed since the entry was last checked. Missed fire times
are collapsed into one submission. State lives beside the schedule in `.schedule-state.json`
(written atomically under a lock); a per-entry lock (`fcntl.flock`) makes a second, overlapping
`run-due` report the entry as skipped while the first still runs it, and an entry whose previous
Ray job (submitted without `wait`) is still PENDING/RUNNING on the cluster is skipped too, its
fire time kept for the next `run-due`. Cron times are UTC.

An entry seen for the first time is *armed*: it is recorded, not run, so adding an entry never
fires a burst; it first runs at its next cron time. A submission that fails (cluster down) is
retried at the next `run-due`; a job that ran and failed waits for its next cron time.

Example (schedules.yaml)::

    schedules:
      - name: ctr-nightly
        cron: "0 2 * * *"
        job: run                  # run | features | validate | a stage name (train, ingest, ...)
        config: ../configs/sample_ctr.yaml
        address: http://127.0.0.1:8265   # omit to run locally in a subprocess

Then, from Python (what `sparserec schedule run-due` does)::

    results = run_due(Path("jobs/schedules.yaml"), now=datetime.now(timezone.utc))
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.errors import ConfigError, UserError
from jobs.schedule_state import StateStore, entry_lock_path, file_lock

DEFAULT_FILE = Path(__file__).resolve().parent / "schedules.yaml"


class ScheduleEntry(BaseModel):
    """One scheduled job."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="unique; names the lock file and the state key")
    cron: str = Field(description="five fields, UTC: minute hour day-of-month month day-of-week")
    job: str = Field(default="run", description="run | features | validate | a stage name")
    config: Path = Field(description="run config; relative paths are read from the schedule file's folder")
    address: str | None = Field(default=None, description="Ray dashboard address; none runs the job locally")
    run_id: str | None = None
    wait: bool = Field(default=False, description="Ray jobs: hold the entry's lock until the job ends")
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"'{v}' is not a valid cron expression; write five fields "
                             "'minute hour day month weekday', e.g. '*/15 * * * *' or '0 2 * * *'")
        return v

    @field_validator("job")
    @classmethod
    def _known_job(cls, v: str) -> str:
        from jobs.submit import PSEUDO_STAGES
        from jobs.stages import GRAPH

        names = list(PSEUDO_STAGES) + sorted({s.name for s in GRAPH})
        if v not in names:
            raise ValueError(f"unknown job '{v}'; choose one of {', '.join(names)}")
        return v


class ScheduleFile(BaseModel):
    """The whole schedule file."""

    model_config = ConfigDict(extra="forbid")
    schedules: list[ScheduleEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "ScheduleFile":
        seen: set[str] = set()
        for e in self.schedules:
            if e.name in seen:
                raise ValueError(f"two entries are named '{e.name}'; names must be unique")
            seen.add(e.name)
        return self


def _schedule_error(path: Path, data: dict, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = list(e["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "schedules" and isinstance(loc[1], int):
        i = loc[1]
        entries = data.get("schedules") or []
        name = entries[i].get("name") if i < len(entries) and isinstance(entries[i], dict) else None
        where = f"entry {i + 1}" + (f" '{name}'" if name else "") + ": "
        loc = loc[2:]
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        allowed = ScheduleEntry.model_fields if where else ScheduleFile.model_fields
        return f"{path}: {where}unknown key '{key}'; allowed: {', '.join(allowed)}."
    if e["type"] == "missing":
        return f"{path}: {where}key '{key}' is missing; add it."
    msg = e["msg"].removeprefix("Value error, ")
    return f"{path}: {where}{'key ' + repr(key) + ': ' if key else ''}{msg}."


def load_schedule(path: Path = DEFAULT_FILE) -> ScheduleFile:
    """Read and validate a schedule file; config paths become absolute (from the file's folder).

    Example:
        >>> [e.name for e in load_schedule(DEFAULT_FILE).schedules]
        ['ctr-nightly', 'sessions-features-hourly']
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: schedule file not found; pass --file or create it (see jobs/schedules.yaml).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML syntax error: {str(err).splitlines()[0]}; fix the YAML.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'schedules' list at the top level.")
    try:
        sched = ScheduleFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_schedule_error(path, data, err)) from None
    base = path.resolve().parent
    for i, e in enumerate(sched.schedules, start=1):
        if not e.config.is_absolute():
            e.config = (base / e.config).resolve()
        if not e.config.exists():
            raise ConfigError(f"{path}: entry {i} '{e.name}': key 'config': {e.config} does not exist; fix the path "
                              "(relative paths are read from the schedule file's folder).")
    return sched


@dataclass(frozen=True)
class Due:
    """Whether an entry fires now: the latest fire time passed, and how many were collapsed into it."""

    fire_at: datetime | None
    fires: int

    @property
    def is_due(self) -> bool:
        return self.fires > 0


def due_since(cron: str, last_checked: datetime, now: datetime, cap: int = 100_000) -> Due:
    """Fire times of `cron` in (last_checked, now]: the latest one and their count (capped).

    Example:
        >>> t = lambda h, m: datetime(2026, 1, 1, h, m, tzinfo=timezone.utc)
        >>> due_since("*/15 * * * *", t(10, 0), t(11, 7)).fires
        4
    """
    from croniter import croniter

    it = croniter(cron, last_checked)
    latest, n = None, 0
    while n < cap:
        t = it.get_next(datetime)
        if t > now:
            break
        latest, n = t, n + 1
    return Due(latest, n)


def next_fire(cron: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, after).get_next(datetime)


def parse_now(text: str | None) -> datetime:
    """`--now` as an aware UTC datetime (naive ISO times are read as UTC); the current time when empty."""
    if not text:
        return datetime.now(timezone.utc)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--now {text}: not an ISO time; write e.g. 2026-01-01T02:00 or 2026-01-01T02:00+00:00.") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


# --- running --------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What `run_due` did with one entry."""

    name: str
    action: str  # armed | not-due | due (dry run) | submitted | ran | failed | skipped | disabled
    fire_at: str | None = None
    fires: int = 0
    job_id: str | None = None
    detail: str = ""


Runner = Callable[[ScheduleEntry], tuple[str, str | None, str]]  # → (action, job_id, detail)
StatusOf = Callable[[ScheduleEntry, str], str | None]  # → the Ray job's status, None when unknown


def ray_job_status(entry: ScheduleEntry, job_id: str) -> str | None:
    """Status of an earlier submission of `entry` on its cluster; None when it cannot be asked."""
    from jobs.submit import job_status

    try:
        return job_status(entry.address, job_id) if entry.address else None
    except Exception:  # noqa: BLE001 - cluster down or job unknown: submitting will tell
        return None


def run_entry(entry: ScheduleEntry) -> tuple[str, str | None, str]:
    """Submit to Ray when the entry has an address (and follow it if `wait`), else run locally."""
    from jobs.submit import PROJECT_ROOT, follow_job, job_command, relative_config, submit_job

    if entry.address:
        cmd = job_command(relative_config(entry.config, PROJECT_ROOT), entry.job, entry.run_id)
        job_id = submit_job(entry.address, cmd, metadata={"schedule": entry.name})
        if not entry.wait:
            return "submitted", job_id, cmd
        status = follow_job(entry.address, job_id)
        return ("ran" if status == "SUCCEEDED" else "failed"), job_id, f"{cmd} → {status}"
    cmd = job_command(str(entry.config), entry.job, entry.run_id, python=sys.executable)
    proc = subprocess.run(cmd, shell=True, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        return "ran", None, cmd
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return "failed", None, f"exit {proc.returncode}: {tail[0]}"


def run_due(schedule_path: Path = DEFAULT_FILE, now: datetime | None = None, dry_run: bool = False,
            runner: Runner = run_entry, only: str | None = None, status_of: StatusOf = ray_job_status) -> list[Outcome]:
    """Check every entry at `now`; run or submit those due; return one outcome per entry.

    Example::

        [o.action for o in run_due(Path("jobs/schedules.yaml"), dry_run=True)]
        # -> ['not-due', 'due']
    """
    now = now or datetime.now(timezone.utc)
    sched = load_schedule(schedule_path)
    store = StateStore(schedule_path)
    entries = [e for e in sched.schedules if only is None or e.name == only]
    if only is not None and not entries:
        raise UserError(f"--name {only}: no such entry in {schedule_path}.")
    outcomes = []
    for entry in entries:
        if not entry.enabled:
            outcomes.append(Outcome(entry.name, "disabled"))
            continue
        with file_lock(entry_lock_path(schedule_path, entry.name), blocking=False) as got:
            if not got:
                outcomes.append(Outcome(entry.name, "skipped", detail="a previous run of this entry still holds its lock"))
                continue
            outcomes.append(_check_and_run(entry, store, now, dry_run, runner, status_of))
    return outcomes


def _check_and_run(entry: ScheduleEntry, store: StateStore, now: datetime, dry_run: bool, runner: Runner,
                   status_of: StatusOf) -> Outcome:
    rec = store.read().get(entry.name, {})
    if "last_checked" not in rec or rec.get("cron") != entry.cron:
        if not dry_run:
            store.update(entry.name, {"last_checked": now.isoformat(), "cron": entry.cron})
        nxt = next_fire(entry.cron, now).isoformat()
        return Outcome(entry.name, "armed", detail=f"first run at {nxt}")
    due = due_since(entry.cron, datetime.fromisoformat(rec["last_checked"]), now)
    if not due.is_due:
        return Outcome(entry.name, "not-due", detail=f"next at {next_fire(entry.cron, now).isoformat()}")
    fire = due.fire_at.isoformat() if due.fire_at else None
    if dry_run:
        return Outcome(entry.name, "due", fire, due.fires)
    previous = rec.get("last_job_id") if rec.get("last_action") == "submitted" else None
    if previous and status_of(entry, previous) in ("PENDING", "RUNNING"):
        # not-waited Ray jobs outlive run-due's lock: the cluster says whether the last one still runs
        return Outcome(entry.name, "skipped", fire, due.fires, previous,
                       f"the previous job {previous} is still running; checked again at the next run-due")
    try:
        action, job_id, detail = runner(entry)
    except UserError as err:  # could not submit: keep last_checked so the next run-due retries
        store.update(entry.name, {"last_error": str(err), "last_error_at": now.isoformat()})
        return Outcome(entry.name, "failed", fire, due.fires, detail=f"not submitted, retried next time: {err}")
    store.update(entry.name, {"last_checked": now.isoformat(), "last_fire": fire, "fires_collapsed": due.fires,
                              "last_action": action, "last_job_id": job_id, "last_detail": detail,
                              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return Outcome(entry.name, action, fire, due.fires, job_id, detail)


def describe(schedule_path: Path = DEFAULT_FILE, now: datetime | None = None) -> list[dict]:
    """One row per entry for `schedule list`: the entry, its state and its next fire time."""
    now = now or datetime.now(timezone.utc)
    sched = load_schedule(schedule_path)
    state = StateStore(schedule_path).read()
    rows = []
    for e in sched.schedules:
        st = state.get(e.name, {})
        rows.append({"name": e.name, "cron": e.cron, "job": e.job, "config": str(e.config),
                     "address": e.address or "local", "enabled": e.enabled,
                     "last_fire": st.get("last_fire"), "last_action": st.get("last_action"),
                     "next": next_fire(e.cron, now).isoformat()})
    return rows


def outcome_dict(o: Outcome) -> dict:
    return asdict(o)

"""One writer per run folder: an `fcntl.flock` on `<run>/.run.lock`, and owners of temporary folders.

Two `sparserec run` on the same run folder would delete each other's temporary stage folders and
replace outputs the other is reading. `run_lock` makes the second one stop at once with one line
naming the holder (pid and start time), or wait for it (`wait=True`, `run --wait-lock`). The
kernel releases the lock when its process dies, so a killed run never leaves the folder locked.
The lock is re-entrant inside one process (the pipeline holds it and each `run_stage` takes it
again).

Temporary stage folders carry their owner in their name (`.tmp-<stage>-<pid>-<start>-<hex>`,
`start` being the process start time in clock ticks from /proc), so a sweep removes only the ones
whose owner is dead (`owner_alive`), never those of a live process.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> with run_lock(run):                              # what `run_pipeline` and `run_stage` hold
    ...     read_holder(run)["pid"] == os.getpid()
    True
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from features.errors import UserError

LOCK_NAME = ".run.lock"
_HELD: dict[str, list] = {}  # lock path -> [open file, depth], for re-entry in this process


class RunLockedError(UserError):
    """Another process holds the run folder's lock."""

    def __init__(self, run_dir: Path, holder: dict) -> None:
        self.run_dir, self.holder = Path(run_dir), dict(holder)
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started_at', '?')}"
               if holder else "another process")
        cmd = f" ({holder['command']})" if holder.get("command") else ""
        super().__init__(f"{run_dir}: in use by {who}{cmd}; wait for it to finish, pass --wait-lock to queue "
                         "behind it, or use another --run-id.")

    def __reduce__(self):
        return (type(self), (self.run_dir, self.holder))


def process_start(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(pid: int, start: int | None) -> bool:
    """True while process `pid` runs and (when `start` is known) is the same process, not a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def temp_name(stage: str) -> str:
    """A temporary folder name for `stage` owned by this process: `.tmp-<stage>-<pid>-<start>-<hex8>`."""
    pid = os.getpid()
    return f".tmp-{stage}-{pid}-{process_start(pid) or 0}-{uuid.uuid4().hex[:8]}"


def temp_owner(folder: Path, stage: str) -> tuple[int, int | None] | None:
    """(pid, start) from a name made by `temp_name`; None for a name without an owner (older layout)."""
    parts = folder.name.removeprefix(f".tmp-{stage}-").split("-")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), (int(parts[1]) or None)


def stale_temps(run_dir: Path, stage: str) -> list[Path]:
    """Temporary folders of `stage` in `run_dir` whose owner process is dead (or unknown)."""
    out = []
    for tmp in sorted(Path(run_dir).glob(f".tmp-{stage}-*")):
        owner = temp_owner(tmp, stage)
        if owner is None or not owner_alive(*owner):
            out.append(tmp)
    return out


def read_holder(run_dir: Path) -> dict:
    """What the lock holder wrote about itself (pid, host, started_at, command); {} when unreadable."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


@contextmanager
def run_lock(run_dir: Path, wait: bool = False, on_wait: Callable[[dict], None] | None = None) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block; raise `RunLockedError` when taken (or, `wait`, block until free).

    `on_wait(holder)` is called once before blocking, e.g. to say who is waited for.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(run_dir)
            if not wait:
                raise RunLockedError(run_dir, holder) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]}))
        fh.flush()
        _HELD[key] = [fh, 1]
        try:
            yield
        finally:
            del _HELD[key]
            fh.truncate(0)  # a reader racing the next holder sees "another process", never a stale pid
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()

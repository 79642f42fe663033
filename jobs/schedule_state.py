"""Schedule state and locks: `.schedule-state.json` beside the schedule, one lock file per entry.

The state is read-modify-written under its own lock and replaced by an atomic rename, so two
`run-due` processes never lose each other's updates; an entry's lock (`fcntl.flock`, released
by the kernel when its process dies) tells a second `run-due` that the entry is still running.

Example:
    >>> import tempfile
    >>> lock = Path(tempfile.mkdtemp()) / "x.lock"
    >>> with file_lock(lock, blocking=False) as got:
    ...     print(got)
    True
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from features.errors import UserError

STATE_NAME = ".schedule-state.json"
LOCK_DIR = ".schedule-locks"


@contextmanager
def file_lock(path: Path, blocking: bool) -> Iterator[bool]:
    """`fcntl.flock` on `path`; yields False (and holds nothing) when not blocking and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class StateStore:
    """`.schedule-state.json` beside the schedule: per entry, when it was last checked and how it went."""

    def __init__(self, schedule_path: Path):
        self.path = Path(schedule_path).resolve().parent / STATE_NAME
        self.lock_path = self.path.with_suffix(".lock")

    def read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text() or "{}")
        except json.JSONDecodeError:
            raise UserError(f"{self.path}: the schedule state is not valid JSON; delete it "
                            "(every entry is then armed again).") from None

    def update(self, name: str, record: dict) -> None:
        """Merge `record` into the entry's state: read-modify-write under a lock, atomic rename."""
        with file_lock(self.lock_path, blocking=True):
            state = self.read()
            state[name] = {**state.get(name, {}), **record}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)


def entry_lock_path(schedule_path: Path, name: str) -> Path:
    return Path(schedule_path).resolve().parent / LOCK_DIR / f"{name}.lock"

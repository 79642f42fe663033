"""Engine output goes to the running stage's log file, not the console: `<run>/logs/<stage>.log`.

Spark's JVM (log4j banner, WARN lines, `ERROR CodeGenerator` traces), Ray's start-up and token
warnings and Python warnings from torch / torchrec all write to file descriptor 2. While a run
is captured, fd 2 is a pipe and one reader thread copies what arrives into the log of the stage
running at that moment (with `verbose`, to the console as well). A JVM started during one stage
keeps writing into the same pipe, so its later lines land in the later stages' logs. The
console (stdout: stage lines, progress bars) and the CLI's one-line errors (printed after the
capture ends) are not touched.

Example::

    with StageLogs(Path("runs/r/logs")) as logs:
        with logs.stage("ingest"):
            spark_session()          # the banner lands in runs/r/logs/ingest.log
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


class StageLogs:
    """Redirect fd 2 into per-stage log files for the duration of a `with` block."""

    def __init__(self, logs_dir: Path, verbose: bool = False) -> None:
        self.logs_dir = Path(logs_dir)
        self.verbose = verbose
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._saved: int | None = None
        self._marker = f"\x00sparserec-sync-{uuid.uuid4().hex}\x00".encode()
        self._synced = threading.Event()

    def __enter__(self) -> "StageLogs":
        sys.stderr.flush()
        if sys.__stderr__ is not None:
            sys.__stderr__.flush()
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._console = os.fdopen(os.dup(self._saved), "wb", buffering=0)
        # a daemon: a JVM started now holds the pipe for the life of the process, so the reader must too
        threading.Thread(target=self._pump, args=(read_end,), name="stage-logs", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self._switch(None)
        os.dup2(self._saved, 2)
        os.close(self._saved)

    def _pump(self, fd: int) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            if self._marker in pending:
                before, _, pending = pending.partition(self._marker)
                self._write(before)
                self._synced.set()
            keep = self._marker_start(pending)  # the start of a marker split across two reads waits
            self._write(pending[:len(pending) - keep])
            pending = pending[len(pending) - keep:]

    def _marker_start(self, buf: bytes) -> int:
        """Length of the longest end of `buf` that begins the marker (0 almost always: it starts with NUL)."""
        for n in range(min(len(buf), len(self._marker) - 1), 0, -1):
            if self._marker.startswith(buf[-n:]):
                return n
        return 0

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._file is not None:
                self._file.write(data)
                self._file.flush()
            if self.verbose or self._file is None:
                try:
                    self._console.write(data)
                except (OSError, ValueError):
                    pass

    def _sync(self) -> None:
        """Wait until everything written to fd 2 so far has reached the current file."""
        for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
            stream.flush()
        self._synced.clear()
        os.write(2, self._marker)
        self._synced.wait(timeout=5)

    def _switch(self, path: Path | None) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = open(path, "ab") if path is not None else None

    def path(self, stage: str) -> Path:
        return self.logs_dir / f"{stage}.log"

    @contextmanager
    def stage(self, name: str) -> Iterator[Path]:
        """Send fd 2 to `<logs_dir>/<name>.log` (started afresh) while the block runs; yield its path."""
        self._sync()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.path(name)
        log.unlink(missing_ok=True)
        self._switch(log)
        try:
            yield log
        finally:
            self._sync()
            self._switch(None)

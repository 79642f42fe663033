"""Failure injection for tests (`training.fail_at_step`), the same in every training loop (CTR and sessions).

The last worker dies once, just before taking step `fail_at_step` (a marker file in the run's work folder,
holding the step and the pid, makes it once only, so the resumed run goes past that step):
- on Ray Train, its process SIGKILLs itself (no exception, no clean-up: a real death, as when a machine is
  lost) once the controller has taken the worker's checkpoint reports, so the restart knows exactly where to
  resume from;
- in a single process, where nothing could restart it, it raises `PlantedFailure`.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> plant_failure(3, step=2, rank=0, world=1, folder=folder, ray=False)      # not this step: nothing
    >>> plant_failure(3, step=3, rank=0, world=1, folder=folder, ray=False)
    Traceback (most recent call last):
    ...
    pipelines.runtime.failure.PlantedFailure: planted worker failure at step 3 (training.fail_at_step)
    >>> plant_failure(3, step=3, rank=0, world=1, folder=folder, ray=False)      # once only
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

FAIL_MARKER = ".planted_failure_done"


class PlantedFailure(RuntimeError):
    """The failure `training.fail_at_step` asked for (single process: nothing restarts the loop)."""


def plant_failure(fail_at_step: int | None, step: int, rank: int, world: int, folder: Path | None, ray: bool) -> None:
    """Die once at `fail_at_step` on the last rank (see the module docstring); `folder` holds the marker (None: no
    marker, so it dies every time it reaches that step)."""
    marker = Path(folder) / FAIL_MARKER if folder is not None else None
    if fail_at_step != step or rank != world - 1 or (marker is not None and marker.exists()):
        return
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps({"step": step, "pid": os.getpid()}))
        os.replace(tmp, marker)
    if ray:
        wait_until_reports_taken(timeout_s=30.0)
        os.kill(os.getpid(), signal.SIGKILL)
    raise PlantedFailure(f"planted worker failure at step {step} (training.fail_at_step)")


def wait_until_reports_taken(timeout_s: float) -> None:
    """Block until Ray Train's controller has polled every report of this worker (uploads included).

    A report lives in the worker's queue until the controller's next poll; a worker killed before that loses
    it, and the restart resumes from the checkpoint before. Reads Ray Train V2 internals, so anything
    unexpected falls back to waiting two poll intervals.
    """
    deadline = time.monotonic() + timeout_s
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        ctx = get_train_context()
        queue = ctx.get_result_queue()
        while time.monotonic() < deadline and (ctx.current_report_index < ctx.report_call_index or queue.unfinished_tasks):
            time.sleep(0.05)
    except (ImportError, AttributeError, RuntimeError):
        time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)) + 0.5)

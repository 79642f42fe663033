"""The driver's side of a Ray Train run, the same for every model family: start (or join) Ray, the run config
(checkpoint storage and how many are kept, restarts after a worker death, worker niceness), the controller's
environment, `fit()` with progress and a worker's user error raised as itself, and the final checkpoint.

The family gives the `TorchTrainer` its own per-worker loop and datasets (`pipelines/ctr/trainer.py`,
`pipelines/sessions/ray_train.py`); the workers' side is `pipelines/runtime/ray_worker.py`.

Example:
    >>> worker_runtime_env(TrainConfig())
    {'env_vars': {'RAY_worker_niceness': '0'}}

A run (starts Ray)::

    ray_init(TrainConfig())
    result = fit_with_progress(TorchTrainer(loop, run_config=ray_run_config(cfg, out)), cfg,
                               out / ".progress.json", print)
    final_checkpoint(result, out)
    # -> PosixPath('runs/r/train/checkpoints/step_00000078')
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from pipelines.runtime.config import TrainConfig

POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
QUIET_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}


def start_ray(address: str | None, num_cpus: int, **local_options: Any) -> None:
    """Join `address` (or RAY_ADDRESS), or start a local Ray with `num_cpus` logical CPUs and `local_options`
    (further `ray.init` arguments, e.g. `object_store_memory`); nothing when Ray is up already.

    The local Ray is started with `address="local"`: without it `ray.init` joins whatever cluster a `ray start`
    on this machine last recorded in /tmp/ray/ray_current_cluster (another user's, or a dead one), so two runs
    could collide on one cluster or wait on a dead one. A cluster is joined only when it is named."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **local_options)


def ray_init(cfg: TrainConfig) -> None:
    """Ray for a training run: `training.ray.address`, or a local Ray with the workers' CPUs plus one for Ray Data's
    read tasks (so a small machine cannot deadlock), and at least the machine's CPUs."""
    needed = cfg.ray.num_workers * cfg.ray.cpus_per_worker + 1
    start_ray(cfg.ray.address, max(os.cpu_count() or 1, math.ceil(needed)))


def worker_runtime_env(cfg: TrainConfig) -> dict[str, Any]:
    """The training workers' runtime environment (`RunConfig(worker_runtime_env=...)`): their niceness."""
    nice = cfg.ray.worker_niceness
    return {} if nice is None else {"env_vars": {"RAY_worker_niceness": str(nice)}}


def controller_env_vars(cfg: TrainConfig) -> dict[str, str]:
    """The environment Ray Train's driver-side `fit()` reads (and passes to its controller and workers) for a
    run: the poll interval (`training.ray.controller_poll_s`) and, with `training.ray.quiet`, the services off.

    Example:
        >>> controller_env_vars(TrainConfig())["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
        '0.5'
    """
    env = dict(QUIET_ENV) if cfg.ray.quiet else {}
    if cfg.ray.controller_poll_s is not None:
        env[POLL_ENV] = str(cfg.ray.controller_poll_s)
    return env


@contextlib.contextmanager
def controller_env(cfg: TrainConfig) -> Iterator[None]:
    """Set `controller_env_vars(cfg)` while a trainer starts its controller (Ray Train reads them from the
    driver's environment in `fit()`), then restore the environment as it was.

    Example:
        >>> with controller_env(TrainConfig()):
        ...     os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
        '0.5'
    """
    env = controller_env_vars(cfg)
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_run_config(cfg: TrainConfig, out: Path, keep_by: str | None = None) -> Any:
    """Ray Train's `RunConfig` for a run writing under `out`: checkpoints in `out/checkpoints` (kept as
    `training.checkpoints_to_keep`: the newest, or with `keep_by` the highest of that metric; Ray always keeps the
    latest), restarts after `training.max_failures` worker deaths (never after a user error, see
    `fit_with_progress`), worker niceness.

    Example::

        ray_run_config(TrainConfig(), Path("runs/r/train")).failure_config.max_failures
        # -> 2
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(name="checkpoints", storage_path=str(Path(out).resolve()), worker_runtime_env=worker_runtime_env(cfg),
                     failure_config=FailureConfig(max_failures=cfg.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep, checkpoint_score_attribute=keep_by,
                                                        checkpoint_score_order="max"))


def _poll(path: Path, on_progress: Callable[[dict], None], stop: threading.Event) -> None:
    seen = None
    while not stop.wait(0.5):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info != seen:
            seen = info
            on_progress(info)


def fit_with_progress(trainer: Any, cfg: TrainConfig, progress_path: Path,
                      on_progress: Callable[[dict], None] | None = None) -> Any:
    """`trainer.fit()` under the controller settings of `cfg`, feeding `on_progress` with each new content of
    the progress file rank 0 writes (`ray_worker.write_progress`); a worker's `UserError` is raised as itself,
    not as Ray's traceback, and at once: Ray restarts the worker group (`training.max_failures`) only after
    other failures, such as a worker's death (`failure_policy.UserErrorsFailFast`)."""
    from pipelines.runtime.failure_policy import user_errors_not_retried, worker_user_error

    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(progress_path, on_progress, stop), daemon=True) if on_progress else None
    if poller:
        poller.start()
    try:
        with controller_env(cfg), user_errors_not_retried():
            return trainer.fit()
    except Exception as err:  # a worker's user error is the user's message, not Ray's traceback
        user = worker_user_error(err)
        if user is not None:
            raise user from None
        raise
    finally:
        stop.set()
        if poller:
            poller.join()


def final_checkpoint(result: Any, out: Path) -> Path | None:
    """The folder of a Ray Train result's last checkpoint on this machine (copied to `out/final_checkpoint`
    when the storage is elsewhere), or None when the run reported none."""
    if result.checkpoint is None:
        return None
    ckpt = Path(result.checkpoint.path)
    return ckpt if ckpt.exists() else Path(result.checkpoint.to_directory(str(Path(out) / "final_checkpoint")))

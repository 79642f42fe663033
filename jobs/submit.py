"""Ray Jobs submission: run a `sparserec` pipeline (or one stage) on a Ray cluster.

The job's working directory is this project (code, configs, bundled samples), uploaded by Ray's
runtime env without `.venv`, `runs/`, caches and large files; the job runs `python -m jobs.cli ...`
there, so the cluster runs the code of this checkout. Ray 2.60 clusters use token authentication:
the client reads the token as the `ray` CLI does (`RAY_AUTH_MODE=token` with `RAY_AUTH_TOKEN`,
`RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`).

Example::

    job_id = submit_job("http://127.0.0.1:8265", job_command("configs/sample_ctr.yaml"))
    follow_job("http://127.0.0.1:8265", job_id)
    # -> 'SUCCEEDED'
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from pathlib import Path
from typing import Callable

from features.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALWAYS_EXCLUDED = (".venv", ".git", "runs", "**/__pycache__", "**/*.pyc", ".pytest_cache", "benchmarks/out",
                   "spark-warehouse", "metastore_db", "*.egg-info", ".ipynb_checkpoints")
PSEUDO_STAGES = {
    "run": "the whole pipeline (`sparserec run`)",
    "features": "the Spark feature stages (`python -m jobs.spark_features`)",
    "validate": "only check the config on the cluster (`sparserec config validate`)",
}


class SubmitError(UserError):
    """The cluster could not be reached, refused the job, or the job did not succeed."""


def relative_config(config: Path, working_dir: Path) -> str:
    """The config's path inside the working dir (it travels with the job), as a POSIX string.

    Example:
        >>> relative_config(Path("/p/configs/a.yaml"), Path("/p"))
        'configs/a.yaml'
    """
    config, working_dir = Path(config).resolve(), Path(working_dir).resolve()
    try:
        return config.relative_to(working_dir).as_posix()
    except ValueError:
        raise SubmitError(f"{config}: the config must be inside the job's working dir {working_dir} to travel "
                          "with the job; move it there or pass --working-dir.") from None


def job_command(config: str, stage: str = "run", run_id: str | None = None, python: str = "python") -> str:
    """The shell command the job runs for `stage` (run | features | validate | a stage name).

    Example:
        >>> job_command("configs/a.yaml", "train", run_id="r1")
        'python -m jobs.cli run --config configs/a.yaml --only train --run-id r1'
    """
    rid = ["--run-id", run_id] if run_id else []
    if stage == "validate":
        argv = [python, "-m", "jobs.cli", "config", "validate", config]
    elif stage == "features":
        argv = [python, "-m", "jobs.spark_features", "--config", config, *rid]
    elif stage == "run":
        argv = [python, "-m", "jobs.cli", "run", "--config", config, *rid]
    else:
        argv = [python, "-m", "jobs.cli", "run", "--config", config, "--only", stage, *rid]
    return shlex.join(argv)


def check_stage(stage: str) -> None:
    """Reject a `--stage` that is neither a pseudo stage nor a stage of the graph."""
    from jobs.stages import GRAPH

    names = list(PSEUDO_STAGES) + sorted({s.name for s in GRAPH})
    if stage not in names:
        raise SubmitError(f"--stage {stage}: unknown; choose one of {', '.join(names)}.")


def output_dir_warning(config: Path, stage: str) -> str | None:
    """A warning when the job would write its run folder inside the uploaded copy of the project.

    A relative `output_dir` resolves inside the job's working dir, a temporary copy on the cluster,
    so the outputs would not be seen by later jobs (`--stage train` needs `vocab`, `plan`).
    """
    import yaml

    if stage == "validate":
        return None
    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # the job's own config check reports it
    out = Path(str(data.get("output_dir", "runs"))) if isinstance(data, dict) else Path("runs")
    if out.is_absolute():
        return None
    return (f"{config}: output_dir '{out}' is relative, so the job writes its run folder inside its temporary copy "
            "of the project on the cluster; set an absolute output_dir on storage the cluster shares to keep the "
            "outputs (and for --stage <name> to find the earlier stages).")


def large_files(working_dir: Path, max_file_mb: float) -> list[str]:
    """Files above `max_file_mb` under `working_dir` (outside the always-excluded folders), as excludes."""
    limit = max_file_mb * (1 << 20)
    skip = {".venv", ".git", "runs", "__pycache__", ".pytest_cache", "spark-warehouse", "metastore_db"}
    out = []
    for root, dirs, files in os.walk(working_dir):
        dirs[:] = [d for d in dirs if d not in skip]
        for f in files:
            p = Path(root) / f
            try:
                if p.stat().st_size > limit:
                    out.append(p.relative_to(working_dir).as_posix())
            except OSError:  # a file removed while we walk (others write in this tree)
                continue
    return sorted(out)


def runtime_env(working_dir: Path = PROJECT_ROOT, max_file_mb: float = 20.0,
                env_vars: dict[str, str] | None = None) -> dict:
    """Ray runtime env: this project as working dir, minus the venv, runs, caches and large files.

    Example:
        >>> env = runtime_env(PROJECT_ROOT)
        >>> ".venv" in env["excludes"] and env["working_dir"] == str(PROJECT_ROOT)
        True
    """
    excludes = list(ALWAYS_EXCLUDED) + large_files(Path(working_dir), max_file_mb)
    env = {"RAY_USAGE_STATS_ENABLED": "0", **(env_vars or {})}
    return {"working_dir": str(working_dir), "excludes": excludes, "env_vars": env}


_SECRET_PARAM = re.compile(r"(?i)(token|password|passwd|secret|key|auth|signature|credential)")


def redact(address: str, text: str | None = None) -> str:
    """`address` (or `text` mentioning it) with the URL's user, password and secret query values as ***.

    Example:
        >>> redact("https://alice:s3cret@ray.example:8265/?token=abc&x=1")
        'https://***:***@ray.example:8265/?token=***&x=1'
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    text = address if text is None else text
    try:
        parts = urlsplit(address)
    except ValueError:
        return text
    secrets = [v for v in (parts.username, parts.password) if v]
    netloc = parts.netloc
    if "@" in netloc:
        user_info, host = netloc.rsplit("@", 1)
        netloc = ("***:***" if ":" in user_info else "***") + "@" + host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secrets += [v for k, v in pairs if v and _SECRET_PARAM.search(k)]
        query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    clean = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    text = text.replace(address, clean)
    for secret in sorted(set(secrets), key=len, reverse=True):  # also where an error message quotes them
        text = text.replace(secret, "***")
    return text


def client(address: str):
    """A `JobSubmissionClient` for `address`, with connection problems as one-line errors (credentials redacted)."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001 - requests/aiohttp/auth errors of every kind
        raise SubmitError(f"--address {redact(address)}: cannot reach the Ray dashboard ({redact(address, _first_line(err))}); start a "
                          "cluster with `ray start --head`, check the address, or set RAY_AUTH_MODE=token and "
                          "the token (RAY_AUTH_TOKEN_PATH) if the cluster uses token authentication.") from None


def submit_job(address: str, entrypoint: str, working_dir: Path = PROJECT_ROOT, max_file_mb: float = 20.0,
               submission_id: str | None = None, metadata: dict[str, str] | None = None) -> str:
    """Submit `entrypoint` with this project as working dir; return the job's submission id."""
    c = client(address)
    try:
        return c.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(working_dir, max_file_mb),
                            submission_id=submission_id, metadata=metadata or {})
    except Exception as err:  # noqa: BLE001
        raise SubmitError(f"--address {redact(address)}: the cluster refused the job "
                          f"({redact(address, _first_line(err))}).") from None


def job_status(address: str, job_id: str) -> str:
    """PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED."""
    return str(client(address).get_job_status(job_id))


def job_logs(address: str, job_id: str) -> str:
    """Everything the job's driver has printed so far."""
    return client(address).get_job_logs(job_id)


def follow_job(address: str, job_id: str, echo: Callable[[str], None] | None = None,
               timeout_s: float | None = None, poll_s: float = 0.5) -> str:
    """Stream the job's logs to `echo` until it ends; return its final status.

    Raises `SubmitError` when `timeout_s` passes first (the job keeps running).
    """
    c = client(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if echo is not None:
        async def tail() -> None:
            async for chunk in c.tail_job_logs(job_id):
                echo(chunk)

        try:
            asyncio.run(asyncio.wait_for(tail(), timeout=timeout_s))
        except (asyncio.TimeoutError, TimeoutError):
            pass
        except Exception:  # noqa: BLE001 - the log stream closed early; status polling below decides
            pass
    while True:
        status = str(c.get_job_status(job_id))
        if status in ("STOPPED", "SUCCEEDED", "FAILED"):
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(f"job {job_id} is still {status} after {timeout_s:.0f}s; it keeps running "
                              f"(`ray job status {job_id}`).")
        time.sleep(poll_s)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

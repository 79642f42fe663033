"""Ray Jobs submission: the job command, the upload rules, and a real submission to a local head."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobs.submit import (PROJECT_ROOT, SubmitError, check_stage, job_command, large_files, relative_config,
                         runtime_env)

VENV_BIN = Path(sys.executable).parent


def test_job_command_for_each_kind_of_stage():
    assert job_command("configs/a.yaml") == "python -m jobs.cli run --config configs/a.yaml"
    assert job_command("configs/a.yaml", "train", "r1") == "python -m jobs.cli run --config configs/a.yaml --only train --run-id r1"
    assert job_command("c d.yaml", "validate") == "python -m jobs.cli config validate 'c d.yaml'"
    assert job_command("a.yaml", "features", python="/x/python") == "/x/python -m jobs.spark_features --config a.yaml"


def test_config_outside_working_dir_and_unknown_stage_are_one_line_errors(tmp_path):
    assert relative_config(PROJECT_ROOT / "configs" / "sample_ctr.yaml", PROJECT_ROOT) == "configs/sample_ctr.yaml"
    with pytest.raises(SubmitError, match="must be inside the job's working dir"):
        relative_config(tmp_path / "c.yaml", PROJECT_ROOT)
    with pytest.raises(SubmitError, match="--stage trian: unknown; choose one of run, features, validate, .*train"):
        check_stage("trian")
    check_stage("train")


def test_relative_output_dir_is_warned_about_except_for_validate(tmp_path):
    from jobs.submit import output_dir_warning

    rel, absolute = tmp_path / "rel.yaml", tmp_path / "abs.yaml"
    rel.write_text("output_dir: ../runs\ndataset: {path: x, kind: ctr}\n")
    absolute.write_text(f"output_dir: {tmp_path / 'runs'}\ndataset: {{path: x, kind: ctr}}\n")
    assert "output_dir '../runs' is relative" in output_dir_warning(rel, "train")
    assert output_dir_warning(rel, "validate") is None
    assert output_dir_warning(absolute, "run") is None


def test_runtime_env_leaves_out_venv_runs_and_large_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * (3 << 20))
    (tmp_path / "data" / "small.tsv").write_bytes(b"x" * 1000)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "huge.so").write_bytes(b"x" * (3 << 20))
    assert large_files(tmp_path, max_file_mb=1) == ["data/big.bin"]
    env = runtime_env(tmp_path, max_file_mb=1)
    assert env["working_dir"] == str(tmp_path)
    assert {".venv", "runs", ".git", "data/big.bin"} <= set(env["excludes"])
    assert "data/small.tsv" not in env["excludes"]


# --- a real Ray head, started for this module on loopback with its own token and temp dir ----

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pids_under(marker: str) -> set[int]:
    """Processes of our head (their command line names our temp dir) and all their descendants."""
    import psutil

    roots = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in a for a in (p.info["cmdline"] or [])):
                roots.add(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    pids = set(roots)
    for pid in roots:
        try:
            pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            continue
    return pids - {os.getpid()}


def _stop_head(marker: str) -> None:
    """Stop only this head's processes, by pid (`ray stop` would stop every Ray on the machine)."""
    import psutil

    pids = _pids_under(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with token auth, a token made for the test, and its own temp dir."""
    # short (Ray's socket paths must stay under 107 bytes) and unique: it is how we find our processes
    base = Path("/tmp") / f"srh-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("ray_home")
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    subprocess.run([str(VENV_BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    assert (home / ".ray" / "auth_token").stat().st_size > 0
    gcs, dash, client, agent, agent_grpc, rt_agent, metrics = _free_ports(7)
    try:
        subprocess.run([str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                        "--dashboard-host=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dash}",
                        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
                        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
                        f"--metrics-export-port={metrics}", "--num-cpus=1", f"--temp-dir={base}",
                        "--object-store-memory=100000000", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop_head(str(base))
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _sparserec(env: dict, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "sparserec"), *args], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_submit_a_job_to_a_local_head_and_read_its_logs(ray_head):
    env, address = ray_head["env"], ray_head["address"]
    t0 = time.perf_counter()
    res = _sparserec(env, "submit", "--address", address, "--config", "configs/sample_ctr.yaml",
                     "--stage", "validate", "--wait", "--timeout", "120")
    assert res.returncode == 0, res.stderr[-2000:]
    job_id = res.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")
    assert f"job {job_id}: SUCCEEDED" in res.stderr
    # the job ran in the uploaded copy of the project: the config and its data travelled with it
    logs = subprocess.run([str(VENV_BIN / "ray"), "job", "logs", job_id, "--address", address], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "configs/sample_ctr.yaml: ok (ctr dataset 'sample-ctr', seed 0)" in logs.stdout
    assert time.perf_counter() - t0 < 120


@pytest.mark.ray
@pytest.mark.slow
def test_a_client_without_the_token_is_refused_in_one_line(ray_head, tmp_path):
    env = {**ray_head["env"], "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_MODE")
    res = _sparserec(env, "submit", "--address", ray_head["address"], "--config", "configs/sample_ctr.yaml",
                     "--stage", "validate", timeout=60)
    assert res.returncode == 2
    assert "cannot reach the Ray dashboard" in res.stderr and "Missing authentication token" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_schedule_run_due_submits_to_the_head_and_waits(ray_head, tmp_path):
    import json

    sched = tmp_path / "schedules.yaml"
    sched.write_text(f"""schedules:
  - name: smoke
    cron: "*/5 * * * *"
    job: validate
    config: {PROJECT_ROOT / 'configs' / 'sample_ctr.yaml'}
    address: {ray_head['address']}
    wait: true
""")
    env = ray_head["env"]
    first = _sparserec(env, "schedule", "run-due", "--file", str(sched), "--now", "2026-03-01T10:01", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["action"] == "armed"
    second = _sparserec(env, "schedule", "run-due", "--file", str(sched), "--now", "2026-03-01T10:11", "--json")
    assert second.returncode == 0, second.stderr[-2000:]
    out = json.loads(second.stdout)
    assert (out["action"], out["fires"], out["fire_at"]) == ("ran", 2, "2026-03-01T10:10:00+00:00")
    assert out["job_id"].startswith("raysubmit_") and out["detail"].endswith("→ SUCCEEDED")
    state = json.loads((tmp_path / ".schedule-state.json").read_text())["smoke"]
    assert state["last_job_id"] == out["job_id"] and state["last_action"] == "ran"

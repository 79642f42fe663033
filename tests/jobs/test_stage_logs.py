"""Engine output goes to the running stage's log file; the console keeps stage lines and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.config import parse_config
from jobs.pipeline import Stage, StageFailed, run_pipeline
from jobs.stage_logs import StageLogs

# a long-lived child writing to the fd 2 it inherited, like the Spark JVM started in the first Spark stage
ECHO_TO_STDERR = "import sys\nfor line in sys.stdin:\n    sys.stderr.write(line); sys.stderr.flush()\n"


def test_engine_output_lands_in_the_running_stages_log(tmp_path, capfd):
    with StageLogs(tmp_path / "logs") as logs:
        with logs.stage("ingest"):
            os.write(2, b"26/12/07 WARN NativeCodeLoader: Unable to load native-hadoop library\n")
            jvm = subprocess.Popen([sys.executable, "-c", ECHO_TO_STDERR], stdin=subprocess.PIPE, text=True)
            jvm.stdin.write("Using Spark's default log4j profile\n")
            jvm.stdin.flush()
            # in-process Python output to stderr (torch / torchrec warnings, Ray's logging handlers)
            sys.__stderr__.write("UserWarning: torch.distributed is disabled\n")
            jvm.stdin.write("sync-1\n")
            jvm.stdin.flush()
            _wait_for_text(tmp_path / "logs" / "ingest.log", "sync-1")
        with logs.stage("vocab"):
            jvm.stdin.write("ERROR CodeGenerator: failed to compile: grows beyond 64 KB\n")
            jvm.stdin.flush()
            _wait_for_text(tmp_path / "logs" / "vocab.log", "grows beyond 64 KB")
        print("  ran vocab", flush=True)                              # stdout: the console's stage lines
    jvm.stdin.close()
    jvm.wait()
    ingest = (tmp_path / "logs" / "ingest.log").read_text()
    assert "NativeCodeLoader" in ingest and "log4j profile" in ingest and "torch.distributed is disabled" in ingest
    assert "CodeGenerator" not in ingest
    assert "CodeGenerator" in (tmp_path / "logs" / "vocab.log").read_text()
    out, err = capfd.readouterr()
    assert out == "  ran vocab\n"
    for noise in ("NativeCodeLoader", "log4j profile", "torch.distributed", "CodeGenerator"):
        assert noise not in err                                          # (a shared JVM may still print its own)


def test_verbose_also_shows_engine_output(tmp_path, capfd):
    with StageLogs(tmp_path / "logs", verbose=True) as logs:
        with logs.stage("rank"):
            os.write(2, b"WARN something from the JVM\n")
    assert "WARN something from the JVM" in (tmp_path / "logs" / "rank.log").read_text()
    assert "WARN something from the JVM" in capfd.readouterr().err


def _wait_for_text(path: Path, text: str, timeout: float = 20) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never reached {path}")


@pytest.fixture()
def cfg(tmp_path: Path):
    (tmp_path / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    return parse_config({"dataset": {"path": "raw.tsv", "kind": "ctr", "roles": {"label": "label"}}}, base_dir=tmp_path)


def _graph(broken: bool) -> list[Stage]:
    def noisy(ctx):
        def fn(inputs, out):
            os.write(2, b"WARN engine chatter\n")
            (out / "x").write_text("1")
            return {"rows_in": 3, "rows_out": 3}
        return fn

    def maybe_broken(ctx):
        def fn(inputs, out):
            if broken:
                os.write(2, b"ERROR Executor: task failed\n")
                raise RuntimeError("kernel exploded")
            (out / "y").write_text("2")
            return {}
        return fn

    return [Stage("a", (), ("dataset",), noisy, raw_inputs=lambda c: {"raw": c.dataset.path}),
            Stage("b", ("a",), ("training",), maybe_broken)]


def test_failed_stage_log_holds_engine_output_and_traceback_and_goes_when_it_succeeds(cfg, tmp_path, capfd):
    run = tmp_path / "run"
    with pytest.raises(StageFailed, match=r"traceback in .*logs/b.log"):
        run_pipeline(cfg, run, _graph(broken=True), capture_logs=True)
    log = (run / "logs" / "b.log").read_text()
    assert "ERROR Executor: task failed" in log and "RuntimeError: kernel exploded" in log
    assert "engine chatter" in (run / "logs" / "a.log").read_text()
    err = capfd.readouterr().err
    assert "engine chatter" not in err and "task failed" not in err  # nothing of the engines on the console
    run_pipeline(cfg, run, _graph(broken=False), capture_logs=True)
    assert not (run / "logs" / "b.log").exists()                      # the old failure's log is gone
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["a.log"]


def test_run_help_lists_the_stage_names():
    res = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    for name in ("ingest", "vocab", "sessions", "quality", "rank", "aggregates", "store", "plan", "train", "report"):
        assert name in res.output
    assert "--verbose" in res.output and "--wait-lock" in res.output


def test_plan_counts_are_labelled_features_and_tables(tmp_path):
    from jobs.cli_run import _fmt_rows
    from jobs.runs import run_stage
    from jobs.stages import count_units

    assert count_units("plan") == ("features", "tables") and count_units("ingest") == ("rows", "rows")
    assert _fmt_rows(39, "features") == "39 features" and _fmt_rows(50_000) == "50,000"
    run_stage(tmp_path / "r", "plan", lambda i, o: {"rows_in": 39, "rows_out": 30}, {}, {})
    res = CliRunner().invoke(app, ["runs", "show", str(tmp_path / "r")], env={"COLUMNS": "200"})
    assert "39 features" in res.output and "30 tables" in res.output

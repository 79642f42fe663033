"""The stage runner: skipping, --from, --only, and failures that keep earlier stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.errors import UserError
from jobs.config import parse_config
from jobs.pipeline import Stage, StageFailed, run_pipeline


@pytest.fixture()
def cfg(tmp_path: Path):
    (tmp_path / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    return parse_config({"dataset": {"path": "raw.tsv", "kind": "ctr", "roles": {"label": "label"}}}, base_dir=tmp_path)


def _graph(calls: list[str], fail: set[str] | None = None) -> list[Stage]:
    fail = fail if fail is not None else set()

    def make(name: str, reads: str | None):
        def build(ctx):
            def fn(inputs, out):
                calls.append(name)
                if name in fail:
                    raise ValueError(f"{name} broke")
                src = inputs[reads] / "rows.txt" if reads in ("a", "b") else inputs["raw"]
                n = len(src.read_text().splitlines())
                (out / "rows.txt").write_text("x\n" * n)
                return {"rows_in": n, "rows_out": n}
            return fn
        return build

    return [
        Stage("a", (), ("dataset",), make("a", "raw"), raw_inputs=lambda c: {"raw": c.dataset.path}),
        Stage("b", ("a",), ("features",), make("b", "a")),
        Stage("c", ("b",), ("training",), make("c", "b")),
        Stage("s", ("a",), (), make("s", "a"), when=lambda c: c.dataset.kind == "sessions"),
    ]


def test_runs_in_order_then_skips(cfg, tmp_path):
    calls: list[str] = []
    out = run_pipeline(cfg, tmp_path / "run", _graph(calls))
    assert [o.stage for o in out] == ["a", "b", "c"]          # 's' does not apply to ctr
    assert [o.status for o in out] == ["ran"] * 3 and out[0].rows_in == 3
    out = run_pipeline(cfg, tmp_path / "run", _graph(calls))
    assert [o.status for o in out] == ["skipped"] * 3
    assert calls == ["a", "b", "c"]


def test_config_change_reruns_only_affected_stages(cfg, tmp_path):
    calls: list[str] = []
    run_pipeline(cfg, tmp_path / "run", _graph(calls))
    cfg.training.epochs = 7
    out = run_pipeline(cfg, tmp_path / "run", _graph(calls))
    assert [o.status for o in out] == ["skipped", "skipped", "ran"]


def test_from_and_only(cfg, tmp_path):
    calls: list[str] = []
    run_pipeline(cfg, tmp_path / "run", _graph(calls))
    calls.clear()
    run_pipeline(cfg, tmp_path / "run", _graph(calls), from_stage="b")
    assert calls == ["b", "c"]
    calls.clear()
    run_pipeline(cfg, tmp_path / "run", _graph(calls), only="a")
    assert calls == ["a"]
    with pytest.raises(UserError, match="no such stage"):
        run_pipeline(cfg, tmp_path / "run", _graph(calls), only="zzz")


def test_only_without_upstream_output_is_a_clear_error(cfg, tmp_path):
    with pytest.raises(UserError, match="needs the output of 'a'"):
        run_pipeline(cfg, tmp_path / "fresh", _graph([]), only="b")


def test_failure_keeps_earlier_outputs_and_rerun_continues(cfg, tmp_path):
    calls: list[str] = []
    with pytest.raises(StageFailed) as exc:
        run_pipeline(cfg, tmp_path / "run", _graph(calls, fail={"b"}))
    assert "stage 'b' failed: b broke" in str(exc.value) and "\n" not in str(exc.value)
    assert (tmp_path / "run" / "a" / "rows.txt").exists()
    assert not (tmp_path / "run" / "b").exists()
    assert "ValueError" in (tmp_path / "run" / "logs" / "b.log").read_text()
    out = run_pipeline(cfg, tmp_path / "run", _graph(calls))
    assert [o.status for o in out] == ["skipped", "ran", "ran"]
    assert calls == ["a", "b", "b", "c"]

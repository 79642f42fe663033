"""`jobs.pipeline.run_only` (what every CLI stage command runs): the run's stage and fingerprint, so outputs are shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from features.errors import UserError
from jobs.config import parse_config
from jobs.pipeline import Stage, run_only, run_pipeline


@pytest.fixture()
def cfg(tmp_path: Path):
    (tmp_path / "raw.tsv").write_text("label\tC1\n1\ta\n0\tb\n")
    return parse_config({"dataset": {"path": "raw.tsv", "kind": "ctr", "roles": {"label": "label"}}}, base_dir=tmp_path)


def _graph(calls: list[tuple[str, dict]]) -> list[Stage]:
    def make(name: str):
        def build(ctx):
            def fn(inputs, out):
                calls.append((name, dict(ctx.options)))
                src = inputs["a"] / "rows.txt" if "a" in inputs else inputs["raw"]
                n = len(src.read_text().splitlines())
                (out / "rows.txt").write_text("x\n" * (n + ctx.options.get("extra", 0)))
                return {"rows_in": n, "rows_out": n, "had": sorted(inputs)}
            return fn
        return build

    return [Stage("a", (), ("dataset",), make("a"), raw_inputs=lambda c: {"raw": c.dataset.path}),
            Stage("b", ("a",), ("training",), make("b")),
            Stage("s", ("a",), (), make("s"), when=lambda c: c.dataset.kind == "sessions")]


def test_a_stage_built_alone_is_current_for_the_run(cfg, tmp_path):
    calls: list = []
    run = tmp_path / "run"
    assert run_only(cfg, _graph(calls), "a", run / "a").status == "ran"
    assert run_only(cfg, _graph(calls), "b", run / "b").status == "ran"
    assert run_only(cfg, _graph(calls), "b", run / "b").status == "skipped"   # unlike `run --only`, not rebuilt
    out = run_pipeline(cfg, run, _graph(calls))
    assert [(o.stage, o.status) for o in out] == [("a", "skipped"), ("b", "skipped")]
    assert [c[0] for c in calls] == ["a", "b"]
    cfg.training.epochs = 9                                                     # b's section changed: the run re-runs b only
    out = run_pipeline(cfg, run, _graph(calls))
    assert [(o.stage, o.status) for o in out] == [("a", "skipped"), ("b", "ran")]
    assert run_only(cfg, _graph(calls), "b", run / "b").status == "skipped"   # and the command finds the run's b current
    assert run_only(cfg, _graph(calls), "b", run / "b", force=True).status == "ran"
    assert [c[0] for c in calls] == ["a", "b", "b", "b"]


def test_a_stage_the_run_built_is_current_for_the_command(cfg, tmp_path):
    calls: list = []
    run_pipeline(cfg, tmp_path / "run", _graph(calls))
    assert run_only(cfg, _graph(calls), "a", tmp_path / "run" / "a").status == "skipped"
    assert run_only(cfg, _graph(calls), "b", tmp_path / "run" / "b").status == "skipped"
    assert len(calls) == 2


def test_options_count_in_the_fingerprint_only_when_given(cfg, tmp_path):
    calls: list = []
    run = tmp_path / "run"
    run_only(cfg, _graph(calls), "a", run / "a")
    assert run_only(cfg, _graph(calls), "b", run / "b", options={"extra": 2}).status == "ran"
    assert calls[-1] == ("b", {"extra": 2}) and (run / "b" / "rows.txt").read_text().count("x") == 5
    out = run_pipeline(cfg, run, _graph(calls))                                   # the run has no such option: rebuilt
    assert [(o.stage, o.status) for o in out] == [("a", "skipped"), ("b", "ran")] and calls[-1] == ("b", {})


def test_an_input_outside_the_run_with_the_same_content_keeps_the_output_current(cfg, tmp_path):
    calls: list = []
    elsewhere = tmp_path / "other" / "a"
    run_only(cfg, _graph(calls), "a", elsewhere)
    run = tmp_path / "run"
    assert run_only(cfg, _graph(calls), "b", run / "b", inputs={"a": elsewhere}).status == "ran"
    shutil.copytree(elsewhere, run / "a")                                         # the same stage output, now in the run
    out = run_pipeline(cfg, run, _graph(calls))
    assert [o.status for o in out] == ["skipped", "skipped"]
    other = tmp_path / "raw2.tsv"
    other.write_text("label\tC1\n1\ta\n")                                           # a different raw file: not current
    assert run_only(cfg, _graph(calls), "a", run / "a", inputs={"raw": other}).status == "ran"
    assert run_only(cfg, _graph(calls), "b", run / "b").status == "ran"


def test_a_folder_named_otherwise_and_a_dropped_input(cfg, tmp_path):
    calls: list = []
    run = tmp_path / "run"
    run_only(cfg, _graph(calls), "a", run / "a")
    o = run_only(cfg, _graph(calls), "b", run / "b_variant")
    assert o.stage == "b_variant" and o.status == "ran" and (run / "b_variant" / "manifest.json").exists()
    o = run_only(cfg, _graph(calls), "a", run / "a2", inputs={"raw": None, "a": run / "a"})
    assert o.summary["had"] == ["a"]


def test_user_mistakes_are_one_line(cfg, tmp_path):
    with pytest.raises(UserError, match=r"stage 's' does not apply to a 'ctr' dataset") as exc:
        run_only(cfg, _graph([]), "s", tmp_path / "run" / "s")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match=r"run/a: not found; stage 'b' reads it as its 'a' input; run `sparserec run --only a`"):
        run_only(cfg, _graph([]), "b", tmp_path / "run" / "b")

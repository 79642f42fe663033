"""`sparserec sessions ...`: prepare a layout, train two models, evaluate them side by side; user errors in one line."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from features.errors import UserError
from jobs.cli import app

runner = CliRunner()


def test_prepare_train_evaluate(sessions_small, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layout = tmp_path / "run" / "sessions"
        res = runner.invoke(app, ["sessions", "prepare-synthetic", "--events", str(sessions_small["path"]),
                                  "--items", str(sessions_small["items"]), "--output", str(layout)])
        assert res.exit_code == 0, res.output
        assert (layout / "manifest.json").exists() and (layout / "items").is_dir()
        config = tmp_path / "run.yaml"
        config.write_text("dataset: {path: x.csv, kind: sessions, roles: {item_id: item_id, timestamp: timestamp}}\n"
                          "training:\n  epochs: 1\n  batch_size: 512\n  device: cpu\n  ray: {single_process: true}\n"
                          "  model: {name: m2trec, hidden: 16, layers: 1, max_length: 8}\n")
        for name in ("m2trec", "popularity"):
            res = runner.invoke(app, ["sessions", "train", "--config", str(config), "--sessions", str(layout),
                                      "--output", str(tmp_path / "run" / name), "--model", name])
            assert res.exit_code == 0, res.output
            assert f"{name}: test Recall@20" in res.output
        res = runner.invoke(app, ["sessions", "evaluate", "--sessions", str(layout), "--model", str(tmp_path / "run" / "m2trec"),
                                  "--model", str(tmp_path / "run" / "popularity"), "--output", str(tmp_path / "run" / "report")])
        assert res.exit_code == 0, res.output
        metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
        assert set(metrics) == {"m2trec", "popularity"}
        assert metrics["popularity"]["cold"]["recall@20"] == 0.0 < metrics["m2trec"]["cold"]["recall@20"]
        assert "| m2trec |" in res.output and (tmp_path / "run" / "report" / "recall.png").exists()
    finally:
        torch.set_num_threads(before)


def test_missing_sessions_folder_is_a_user_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("dataset: {path: x.csv, kind: sessions, roles: {item_id: item_id, timestamp: timestamp}}\n")
    res = runner.invoke(app, ["sessions", "train", "--config", str(config), "--sessions", str(tmp_path / "none"),
                              "--output", str(tmp_path / "m")])
    assert isinstance(res.exception, UserError)
    assert "sessions folder not found" in str(res.exception) and "\n" not in str(res.exception)


def test_unknown_model_name_is_a_user_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("dataset: {path: x.csv, kind: sessions, roles: {item_id: item_id, timestamp: timestamp}}\n")
    res = runner.invoke(app, ["sessions", "train", "--config", str(config), "--sessions", str(tmp_path),
                              "--output", str(tmp_path / "m"), "--model", "bert4rec"])
    assert isinstance(res.exception, UserError) and "--model 'bert4rec'" in str(res.exception)


def test_prepare_movielens_runs_on_a_folder_of_either_form(tmp_path):
    from tests.pipelines.ml100k_files import write_ml100k

    for original in (True, False):
        folder = write_ml100k(tmp_path / f"ml-{original}", original=original)
        out = tmp_path / f"layout-{original}"
        res = runner.invoke(app, ["sessions", "prepare-movielens", "--ml100k", str(folder), "--output", str(out),
                                  "--holdout", "1", "--cold-share", "0"])
        assert res.exit_code == 0, res.output
        assert "'train': 3, 'validation': 3, 'test': 3" in res.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["inputs"]["ml100k"]["path"].endswith(f"ml-{original}")
        assert json.loads((out / "split.json").read_text())["sessions"] == {"train": 3, "validation": 3, "test": 3}


def test_prepare_movielens_without_u_data_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["sessions", "prepare-movielens", "--ml100k", str(tmp_path), "--output", str(tmp_path / "o")])
    assert isinstance(res.exception, UserError) and "u.data not found" in str(res.exception)


def test_prepare_synthetic_with_another_catalogue(tmp_path):
    import pandas as pd

    pd.DataFrame({"session_id": ["s1", "s1", "s2", "s2"], "user_id": ["u", "u", "v", "v"], "item_id": ["a", "b", "b", "a"],
                  "timestamp": [1, 2, 3, 4]}).to_csv(tmp_path / "ev.csv", index=False)
    pd.DataFrame({"item_id": ["a", "b"], "genre": ["x", "y"]}).to_csv(tmp_path / "it.csv", index=False)
    res = runner.invoke(app, ["sessions", "prepare-synthetic", "--events", str(tmp_path / "ev.csv"),
                              "--items", str(tmp_path / "it.csv"), "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(tmp_path / "out" / "items")["genre"].tolist() == [2, 3]
    res = runner.invoke(app, ["sessions", "prepare-synthetic", "--events", str(tmp_path / "ev.csv"),
                              "--items", str(tmp_path / "it.csv"), "--output", str(tmp_path / "out2"), "--categorical", "brand"])
    assert isinstance(res.exception, UserError)
    assert "it.csv: column 'brand' is missing" in str(res.exception) and "\n" not in str(res.exception)


def test_prepare_imports_sequences_that_sessions_train_reads(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("".join(f"u{k} " + " ".join(f"i{(k * 3 + j) % 9}" for j in range(5)) + "\n" for k in range(30)) + "u99\n")
    attrs = tmp_path / "items.csv"
    attrs.write_text("item_id,brand,tags\n" + "".join(f"i{k},b{k % 3},t{k % 2}|t9\n" for k in range(9)))
    layout = tmp_path / "layout"
    res = runner.invoke(app, ["sessions", "prepare", "--sequences", str(seq), "--items", str(attrs), "--output", str(layout),
                              "--cold-share", "0.2", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "read 31 rows (sequence_lines): 30 ok, 1 quarantined {'no_items': 1}; 30 sequences used" in res.output
    assert "9 items (2 cold, 0 without attributes)" in res.output
    summary = json.loads((layout / "import.json").read_text())
    assert summary["attributes"]["categorical"] == ["brand"] and summary["attributes"]["multi_valued"] == ["tags"]
    assert json.loads((layout / "manifest.json").read_text())["rows_in"] == 31
    config = tmp_path / "run.yaml"
    config.write_text("dataset: {path: x.csv, kind: sessions, roles: {item_id: item_id, timestamp: timestamp}}\n"
                      "training:\n  epochs: 1\n  batch_size: 64\n  device: cpu\n  ray: {single_process: true}\n"
                      "  model: {name: sasrec, hidden: 8, layers: 1, heads: 1, max_length: 5}\n")
    res = runner.invoke(app, ["sessions", "train", "--config", str(config), "--sessions", str(layout),
                              "--output", str(tmp_path / "sasrec")])
    assert res.exit_code == 0, res.output
    assert "sasrec epoch 1/1 loss" in res.output and "on 30 targets" in res.output
    # the run's train stage (`run --only train`): current when nothing changed, re-run on a change or --force
    args = ["sessions", "train", "--config", str(config), "--sessions", str(layout), "--output", str(tmp_path / "sasrec")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "epoch 1/1" not in res.output and "; unchanged, skipped" in res.output, res.output
    for extra in (["--epochs", "2"], ["--force"]):
        res = runner.invoke(app, args + extra)
        assert res.exit_code == 0 and "sasrec epoch 1/" in res.output and "; wrote" in res.output, res.output
    manifest = json.loads((tmp_path / "sasrec" / "manifest.json").read_text())
    assert manifest["stage"] == "sasrec" and set(manifest["inputs"]) == {"sessions"}


def test_sessions_train_with_a_ctr_config_is_a_user_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("dataset: {path: x.csv, kind: ctr, roles: {label: y}}\n")
    res = runner.invoke(app, ["sessions", "train", "--config", str(config), "--sessions", str(tmp_path),
                              "--output", str(tmp_path / "m")])
    assert isinstance(res.exception, UserError) and "dataset.kind is 'ctr'" in str(res.exception)


def test_prepare_user_errors_are_one_line(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a b c\n")
    res = runner.invoke(app, ["sessions", "prepare", "--sequences", str(seq), "--output", str(tmp_path / "o"),
                              "--protocol", "random"])
    assert isinstance(res.exception, UserError) and "--protocol 'random'" in str(res.exception)
    res = runner.invoke(app, ["sessions", "prepare", "--sequences", str(tmp_path / "none.txt"), "--output", str(tmp_path / "o")])
    assert isinstance(res.exception, UserError) and "none.txt: file not found" in str(res.exception)

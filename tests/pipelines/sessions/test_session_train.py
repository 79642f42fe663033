"""Session training stage on the generated sessions data: files, metrics, save/load, NaN stop, config errors."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.runtime.errors import TrainingDivergedError
from pipelines.sessions.data import load_sessions
from pipelines.sessions.evaluate import evaluate_session_model
from pipelines.sessions.layout import synthetic_layout
from pipelines.sessions.train import TrainingError, build_model, load_model, train_session_model, train_stage


@pytest.fixture(scope="module")
def layout(sessions_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("sessions_layout_train")
    synthetic_layout(sessions_small["path"], sessions_small["items"], out)
    return out


def tiny(name: str, **kw) -> TrainConfig:
    cfg = TrainConfig(model=ModelConfig(name=name, hidden=16, layers=1, heads=2, max_length=10, **kw),
                      epochs=1, batch_size=256, dense_learning_rate=3e-3, device="cpu")
    cfg.ray.single_process = True
    return cfg


@pytest.fixture(scope="module")
def m2trec_stage(layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("m2trec_model")
    summary = train_stage({"sessions": layout}, out, tiny("m2trec"), seed=0)
    return out, summary


def test_stage_writes_model_and_test_metrics(m2trec_stage):
    out, summary = m2trec_stage
    metrics = json.loads((out / "metrics.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"model.pt", "model.json", "metrics.json"}
    assert metrics["model"] == "m2trec" and summary["rows_in"] > 0
    o = metrics["overall"]
    assert o["n"] == summary["rows_out"] > 0
    assert 0 < o["recall@10"] <= o["recall@20"] <= 1 and 0 < o["mrr@20"] <= o["ndcg@20"] <= o["recall@20"]
    # item-ID free: even after one epoch some cold targets are found in the top 20
    assert metrics["cold"]["n"] > 10 and metrics["cold"]["recall@20"] > 0
    assert 0 <= metrics["head_category_acc"] <= 1 and 0 <= metrics["head_subcategory_acc"] <= 1
    assert len(summary["history"]["loss"]) == 1 and summary["history"]["validation"][0] > 0
    assert metrics["training"]["mode"] == "single_process" and (out / "checkpoints" / "epoch_0001").is_dir()


def test_stage_writes_per_category_figures_that_add_up_to_the_overall_ones(m2trec_stage):
    out, _ = m2trec_stage
    m = json.loads((out / "metrics.json").read_text())
    cats = m["per_category"]
    assert len(cats) > 3 and all(not name.isdigit() for name in cats)      # raw category values, not ids
    n = sum(c["n"] for c in cats.values())
    assert n == m["overall"]["n"]
    for key, overall in (("recall@20", m["overall"]["recall@20"]), ("head_category_acc", m["head_category_acc"]),
                         ("top1_category_acc", m["top1_category_acc"])):
        assert sum(c["n"] * c[key] for c in cats.values()) / n == pytest.approx(overall), key
    report = (out / "report.md").read_text()
    biggest = max(cats, key=lambda c: cats[c]["n"])
    assert "## By the target item's category" in report
    assert f"| {biggest} | {cats[biggest]['n']} | {cats[biggest]['recall@20']:.4f} |" in report


def test_saved_model_loads_and_scores_the_same(m2trec_stage, layout):
    out, _ = m2trec_stage
    data = load_sessions(layout)
    model, cfg = load_model(out, data)
    again = evaluate_session_model(model, data, "test", positions=1, max_length=cfg.max_length)
    saved = json.loads((out / "metrics.json").read_text())
    assert again["overall"]["recall@20"] == pytest.approx(saved["overall"]["recall@20"])
    assert again["cold"]["ndcg@20"] == pytest.approx(saved["cold"]["ndcg@20"])


def test_id_baselines_find_no_cold_target(layout):
    data = load_sessions(layout)
    for name in ("sasrec", "popularity"):
        model = build_model(tiny(name).model, data)
        train_session_model(model, data, tiny(name), seed=0)
        r = evaluate_session_model(model, data, "test", max_length=10)
        assert r["cold"]["n"] > 10 and r["cold"]["recall@20"] == 0.0, name
        assert r["overall"]["recall@20"] > 0, name


def test_nan_loss_stops_training_with_the_step(layout):
    data = load_sessions(layout)
    cfg = tiny("gru4rec")
    model = build_model(cfg.model, data)
    with torch.no_grad():
        model.out.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"training diverged: loss is nan at step 1 \(epoch 0, batch 0"):
        train_session_model(model, data, cfg, seed=0)


def test_bad_model_settings_are_user_errors(layout):
    data = load_sessions(layout)
    with pytest.raises(TrainingError, match="task_attributes: 'genre' is not a categorical item attribute"):
        build_model(ModelConfig(name="m2trec", task_attributes=["genre"]), data)
    with pytest.raises(TrainingError, match="3 weights needed"):
        build_model(ModelConfig(name="m2trec", loss_weights=[1.0]), data)
    with pytest.raises(TrainingError, match="'dlrm' is not a session model"):
        build_model(ModelConfig(name="dlrm"), data)


def _tiny_layout(out, items: list[str]):
    import pandas as pd

    from pipelines.sessions.layout import encode_items, write_layout

    enc, vocab = encode_items(pd.DataFrame({"item_id": items, "category": ["x"] * len(items)}), "item_id", ["category"], [])
    sess = pd.DataFrame({"session_id": ["s1"], "user_id": ["u"], "items": [items], "timestamps": [list(range(len(items)))]})
    write_layout(out, {"train": sess, "validation": sess, "test": sess}, enc, vocab)
    return load_sessions(out)


def test_load_model_names_the_keys_and_shapes_that_differ(tmp_path):
    from pipelines.sessions.train import save_model

    small = _tiny_layout(tmp_path / "small", ["a", "b", "c"])
    cfg = ModelConfig(name="sasrec", hidden=8, layers=1, heads=1, max_length=4)
    save_model(build_model(cfg, small), cfg, tmp_path / "model")
    assert load_model(tmp_path / "model", small)[1].name == "sasrec"
    big = _tiny_layout(tmp_path / "big", ["a", "b", "c", "d"])
    with pytest.raises(TrainingError) as err:
        load_model(tmp_path / "model", big)
    msg = str(err.value)
    assert "shape differs: items.row_of saved [4], model [5]; items.embedding.weight saved [4, 8], model [5, 8]" in msg
    assert "\n" not in msg
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["items.embedding.weight"]
    torch.save(state, tmp_path / "model" / "model.pt")
    with pytest.raises(TrainingError, match="missing from the file: items.embedding.weight; unexpected in the file: extra.weight"):
        load_model(tmp_path / "model", small)


def test_stage_prints_a_line_per_epoch_when_not_a_terminal(layout, tmp_path, capsys):
    cfg = tiny("gru4rec")
    cfg.epochs = 2
    train_stage({"sessions": layout}, tmp_path / "g", cfg, seed=0, show_progress=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " epoch " in ln]
    assert [ln.rsplit(" ", 1)[0] for ln in lines] == ["gru4rec epoch 1/2 loss", "gru4rec epoch 2/2 loss"]
    assert all(float(ln.rsplit(" ", 1)[1]) > 0 for ln in lines)


def test_auto_m2trec_is_chosen_on_validation_between_hybrid_and_metadata_only(m2trec_stage, layout):
    out, _ = m2trec_stage
    metrics = json.loads((out / "metrics.json").read_text())
    sel = metrics["model_selection"]
    assert sel["criterion"] == "validation recall@20" and set(sel["scores"]) == {"hybrid", "metadata-only"}
    assert sel["chosen"] == max(sel["scores"], key=lambda n: (sel["scores"][n], n == "hybrid"))
    saved = json.loads((out / "model.json").read_text())
    assert saved["model"]["item_ids"] == {"hybrid": "on", "metadata-only": "off"}[sel["chosen"]] == sel["item_ids"]
    assert sel["cold_ranks"] == saved.get("cold_ranks") == ("metadata-only" if sel["chosen"] == "hybrid" else None)
    assert (out / "checkpoints" / "epoch_0001").is_dir() and (out / "selection" / "metadata-only" / "checkpoints").is_dir()


def test_only_auto_m2trec_on_warm_and_cold_data_has_candidates(layout):
    from pipelines.sessions.select import candidate_configs

    data = load_sessions(layout)
    assert list(candidate_configs(ModelConfig(name="m2trec"), data)) == ["hybrid", "metadata-only"]
    assert [c.item_ids for c in candidate_configs(ModelConfig(name="m2trec"), data).values()] == ["on", "off"]
    assert list(candidate_configs(ModelConfig(name="m2trec", item_ids="off"), data)) == [""]
    assert list(candidate_configs(ModelConfig(name="sasrec"), data)) == [""]
    data.sessions["validation"] = []
    assert list(candidate_configs(ModelConfig(name="m2trec"), data)) == [""]


def test_auto_hybrid_is_saved_with_its_metadata_only_model_and_scores_cold_targets_exactly_as_that_model(layout, tmp_path):
    """The hybrid candidate ranks cold items at the metadata-only model's ranks: equal cold figures, saved and reloaded."""
    from models.cold_ranks import ColdRankHybrid
    from pipelines.sessions.select import fit_selected

    data = load_sessions(layout)
    cfg = tiny("m2trec")
    model, _, tc, sel = fit_selected({"sessions": layout}, tmp_path, data, cfg, seed=0)
    assert sel["chosen"] == "hybrid" and isinstance(model, ColdRankHybrid)   # (seed 0: the pair wins on validation)
    pair = model
    ev = dict(split="test", positions=3, ks=[20], max_length=10, seed=0)
    both, meta_alone = evaluate_session_model(pair, data, **ev), evaluate_session_model(pair.metadata, data, **ev)
    assert both["cold"]["n"] > 0 and both["cold"] == meta_alone["cold"]
    from pipelines.sessions.model import save_model

    save_model(pair, tc.model, tmp_path / "saved")
    loaded, _ = load_model(tmp_path / "saved", data)
    assert isinstance(loaded, ColdRankHybrid)
    assert evaluate_session_model(loaded, data, **ev) == both

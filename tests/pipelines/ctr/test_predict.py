"""`pipelines.ctr.predict`: a finished run scores raw rows through its own ingest rules, vocabularies and
served model, and reproduces its training-time test figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipelines.ctr.predict import PredictConfig, predict
from tests.pipelines.predict_run import period_lines

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _test_auc(run: Path) -> float:
    return json.loads((run / "train" / "metrics.json").read_text())["evaluation"]["splits"]["test"]["auc"]


def _predict(tiny_run: dict, spark, out: Path, **cfg) -> dict:
    """`predict` of the tiny run's test period (raw lines plus three malformed ones) into `out`."""
    return predict(tiny_run["run"], tiny_run["test_file"], out, tiny_run["dataset"], PredictConfig(**cfg), spark)


@pytest.fixture(scope="module")
def as_trained(tiny_run, spark, tmp_path_factory) -> dict:
    """The test period scored in one process, as-trained: the reference of the Ray test too (made once)."""
    out = tmp_path_factory.mktemp("as_trained") / "pred"
    return {"out": out, "summary": _predict(tiny_run, spark, out, single_process=True)}


def test_as_trained_reproduces_the_training_test_auc_and_quarantines_bad_rows(tiny_run, as_trained):
    out, s = as_trained["out"], as_trained["summary"]
    assert s["rows_in"] == tiny_run["test_lines"] + tiny_run["bad"]
    assert s["rows_in"] == s["rows_scored"] + s["rows_quarantined"]
    q = pads.dataset(str(out / "quarantine")).to_table().to_pylist()
    reasons = sorted(r["reason"].split(":")[0] for r in q)
    # the generator's planted malformed lines of the test period, plus our three
    assert {"empty_line", "wrong_column_count", "label_not_binary"} <= set(reasons)
    assert len(q) == s["rows_quarantined"] and s["rows_scored"] == json.loads(
        (tiny_run["run"] / "vocab" / "schema.json").read_text())["rows"]["test"]
    pred = pads.dataset(str(out / "predictions")).to_table()
    assert pred.column_names == ["file", "line", "score", "label"]
    assert abs(s["metrics"]["auc"] - _test_auc(tiny_run["run"])) <= 1e-6
    m = json.loads((out / "metrics.json").read_text())
    assert m["serving_check"]["within_stated"] and m["rows"]["rows_quarantined"] == len(q)
    assert "| predict |" in (out / "report.md").read_text() and (out / "calibration.png").exists()
    assert set(m["evaluation"]["slices"]["predict"]) == {"C1", "C2", "C4"}   # the plan's top-scored features


@pytest.mark.parametrize("serving", ["int8", "int4"])
def test_quantized_serving_stays_within_the_plans_stated_error(tiny_run, spark, tmp_path, serving):
    from embeddings.planner import PRECISION_QUALITY

    s = _predict(tiny_run, spark, tmp_path / serving, single_process=True, serving=serving)
    ref = _test_auc(tiny_run["run"])
    assert s["metrics"]["stated_auc_loss"] == pytest.approx((1 - PRECISION_QUALITY[serving]) * ref)
    assert ref - s["metrics"]["auc"] <= s["metrics"]["stated_auc_loss"]
    assert s["metrics"]["auc"] != ref or serving == "int8"   # int4 really changed the scores


@pytest.mark.ray
@pytest.mark.timeout(1800)  # run alone, this item also builds the session's tiny run (Spark, training): minutes under load
def test_ray_actor_pool_gives_the_single_process_scores(tiny_run, as_trained, spark, tmp_path, ray_local):
    one = as_trained["summary"]
    two = _predict(tiny_run, spark, tmp_path / "ray", workers=2, batch_size=128)
    a = pads.dataset(str(as_trained["out"] / "predictions")).to_table()
    b = pads.dataset(str(tmp_path / "ray" / "predictions")).to_table()
    assert (two["mode"], two["workers"], b.num_rows) == ("ray", 2, one["rows_scored"]), two
    # every batch of 128 rows was one block, each written as its own file: the actors shared the rows
    parts = sorted((tmp_path / "ray" / "predictions").glob("*.parquet"))
    assert len(parts) == -(-b.num_rows // 128) and b.num_rows > 2 * 128, [p.name for p in parts]
    assert b.column("line").to_pylist() == a.column("line").to_pylist(), "Ray changed the row order"
    # other batch sizes may round the dense layers' float32 sums differently
    np.testing.assert_allclose(b.column("score").to_numpy(), a.column("score").to_numpy(), rtol=0, atol=1e-5)
    assert two["metrics"]["auc"] == pytest.approx(one["metrics"]["auc"], abs=1e-6)
    # the vocabularies' indexes were built once, by the driver, for the actors to memory-map
    assert (tiny_run["run"] / "cache" / "vocab_index" / "stamp.json").exists()


def test_unlabelled_input_is_scored_without_metrics(tiny_run, spark, tmp_path):
    header, lines = period_lines(tiny_run["raw"], tiny_run["run"])
    cols = header.split("\t")
    keep = [i for i, c in enumerate(cols) if c != "label"]
    f = tmp_path / "nolabel.tsv"
    f.write_text("\n".join("\t".join(ln.split("\t")[i] for i in keep) for ln in [header, *lines[:50]]) + "\n")
    s = predict(tiny_run["run"], f, tmp_path / "out", tiny_run["dataset"], PredictConfig(single_process=True), spark)
    assert s["label"] is None and "metrics" not in s and not (tmp_path / "out" / "metrics.json").exists()
    assert pads.dataset(str(tmp_path / "out" / "predictions")).to_table().column_names == ["file", "line", "score"]


@pytest.mark.parametrize("serving", ["exported", "eager"])
def test_the_exported_artifact_and_the_eager_model_also_reproduce_the_test_auc(tiny_run, spark, tmp_path, serving):
    # the tiny run's plan is dense, so its exported artifact holds the trained fp32 rows
    s = _predict(tiny_run, spark, tmp_path / serving, single_process=True, serving=serving)
    assert abs(s["metrics"]["auc"] - _test_auc(tiny_run["run"])) <= 1e-6
    assert s["backend"].startswith("FBGEMM IntNBit TBE, embeddings.pt" if serving == "exported" else "eager PyTorch")


@pytest.mark.parametrize("serving", ["as-trained", "int4"])
def test_a_unit_encoded_at_once_gets_the_scores_of_its_batches_scored_one_by_one(tiny_run, serving):
    import torch

    from pipelines.ctr.serving import Scorer

    rows = pads.dataset(str(tiny_run["run"] / "ingest" / "data"), format="parquet").head(300)
    scorer = Scorer(tiny_run["run"], serving, label="label")
    seen: list[int] = []
    hook = scorer.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    whole = scorer.scores(rows, batch_size=128)
    hook.remove()
    one_by_one = np.concatenate([scorer.scores(rows.slice(at, 128)) for at in range(0, 300, 128)])
    assert seen == [128, 128, 44] and whole.dtype == np.float32
    assert np.array_equal(whole, one_by_one)
    served = type(scorer.model).__name__
    assert served == ("ServedDLRM" if serving == "int4" else "DLRM")
    if serving == "int4":  # the re-arranged dense part: the trained module's function (float order aside; bf16 dots
        from pipelines.ctr.batches import batch_from_arrow      # where the CPU has them: 8 mantissa bits)
        from pipelines.ctr.serving import RunModel

        info = RunModel.load(tiny_run["run"] / "train" / "model")
        plain = info.eager()
        plain.sparse = scorer.model.sparse
        b = batch_from_arrow(scorer.encoder.encode(rows, scorer.features), scorer.spec)
        with torch.inference_mode():
            ref = torch.sigmoid(plain(b.dense, b.sparse)).numpy()
        assert np.abs(scorer.scores(rows) - ref).max() < (1e-2 if info.bf16_dots(serving) else 1e-6)
        assert scorer.backend.endswith(", DLRM dots in bf16") == info.bf16_dots(serving)

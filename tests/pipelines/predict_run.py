"""A tiny finished CTR run made by the real stages (ingest and vocab in Spark, a dense plan, a
single-process training), and the raw lines of its own test period, for the predict tests.

`rank` is left out: the plan is written from the vocab sizes (`encoded_data.dense_plan`), as the
training tests do, which keeps the run to a few seconds of training. The features, their scores and
the training stage are the notebook tests' (`tests/jobs/test_notebooks.py`), so both test the same run.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from embeddings.spec import EmbeddingPlan
from features.config import ColumnRoles, DatasetConfig, IngestConfig, VocabConfig
from jobs.runs import run_stage
from tests.jobs.test_notebooks import FEATURES, SCORES, _ctr_train
from tests.pipelines.encoded_data import dense_plan

DENSE = ["I1", "I2", "I3", "I4"]


def tiny_dataset(raw: Path, features: list[str] = FEATURES, dense: list[str] = DENSE) -> DatasetConfig:
    """The run's dataset declaration: generated CTR TSV, by default 4 dense and 8 categorical columns."""
    return DatasetConfig(path=raw, format="tsv", kind="ctr",
                         roles=ColumnRoles(label="label", timestamp="ts", dense=list(dense), categorical=list(features)))


def _plan(inputs, out, scores: list[float], dim: int):
    schema = json.loads((Path(inputs["vocab"]) / "schema.json").read_text())
    plan = dense_plan(schema, dim=dim)
    for t, s in zip(plan.tables, scores):
        t.score = s
    plan.save(out / "embedding_plan.json")
    return {"rows_in": len(plan.tables), "rows_out": len(plan.tables)}


def build_tiny_run(root: Path, spark, rows: int = 3000, seed: int = 11, features: list[str] = FEATURES,
                   dense: list[str] = DENSE, dim: int = 8) -> dict:
    """Generate data, run ingest → vocab → plan → train into `root/runs/tiny`; return paths and the dataset."""
    from features.ingest import ingest
    from features.synthetic import generate
    from features.vocab import build_vocab

    truth = generate("ctr", rows=rows, seed=seed, output=root / "data", bad_rows=3)
    raw = root / "data" / truth["file"]
    ds = tiny_dataset(raw, features, dense)
    run = root / "runs" / "tiny"
    run_stage(run, "ingest", partial(ingest, dataset=ds, cfg=IngestConfig(), spark=spark), inputs={"raw": raw}, config={})
    run_stage(run, "vocab", partial(build_vocab, dataset=ds, cfg=VocabConfig(), spark=spark),
              inputs={"ingest": run / "ingest"}, config={})
    run_stage(run, "plan", partial(_plan, scores=SCORES, dim=dim), inputs={"vocab": run / "vocab"}, config={})
    run_stage(run, "train", _ctr_train, inputs={"vocab": run / "vocab", "plan": run / "plan"}, config={})
    return {"run": run, "dataset": ds, "raw": raw, "plan": EmbeddingPlan.load(run / "plan" / "embedding_plan.json")}


def period_lines(raw: Path, run: Path) -> tuple[str, list[str]]:
    """The header and the raw lines whose timestamp is in the run's test period (malformed lines included)."""
    cuts = json.loads((run / "vocab" / "schema.json").read_text())["cuts"]
    lines = raw.read_text().split("\n")
    header, body = lines[0], [ln for ln in lines[1:] if ln]
    ts = header.split("\t").index("ts")
    out = []
    for ln in body:
        f = ln.split("\t")
        try:
            t = float(f[ts])
        except (IndexError, ValueError):
            continue
        if t >= cuts["test_start"]:
            out.append(ln)
    return header, out


def make_tiny_run(tmp_path_factory, spark) -> dict:
    """The tiny run, and a raw file of its test period with three more malformed lines: the body of the
    session fixture `tiny_run` (tests/conftest.py, defined there once so both the predict and the CLI
    predict tests get the same run; a fixture imported into two test modules is built once per module)."""
    root = tmp_path_factory.mktemp("predict")
    got = build_tiny_run(root, spark)
    header, lines = period_lines(got["raw"], got["run"])
    bad = ["1\tnot-a-time" + "\tx" * 10, "", "\t".join(["2"] + header.split("\t")[1:])]  # wrong count, empty, label 2
    test_file = root / "test_period.tsv"
    test_file.write_text("\n".join([header, *lines, *bad]) + "\n")
    got.update(test_file=test_file, test_lines=len(lines), bad=len(bad), root=root)
    return got

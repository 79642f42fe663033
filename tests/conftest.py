"""Shared fixtures: one SparkSession and one Ray instance per test session, small generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op torch thread for the whole suite: on a busy 2-core machine two spinning threads
    run ~20x slower, and the tests' tensors are tiny."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession shared by every test (starting one costs about 6 s)."""
    from features.config import SparkConfig
    from features.spark import spark_session

    s = spark_session(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=4,
                                  conf={"spark.ui.enabled": "false"}))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by every test (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 object_store_memory=512 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ctr_small(tmp_path_factory) -> dict:
    """A generated CTR dataset of 20k rows with 9 planted malformed lines; returns truth + paths."""
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("ctr_small")
    truth = generate("ctr", rows=20_000, seed=7, output=out, bad_rows=9)
    return {"dir": out, "path": out / truth["file"], "truth": truth}


@pytest.fixture(scope="session")
def sessions_small(tmp_path_factory) -> dict:
    """A generated session dataset of about 8k events; returns truth + paths."""
    from features.synthetic import generate

    out = tmp_path_factory.mktemp("sessions_small")
    truth = generate("sessions", rows=8_000, seed=3, output=out)
    return {"dir": out, "path": out / truth["file"], "items": out / truth["items_file"], "truth": truth}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, spark) -> dict:
    """A tiny finished CTR run (ingest, vocab, plan, train) and a raw file of its test period, built once for
    the predict and CLI predict tests (tests/pipelines/predict_run.py)."""
    from tests.pipelines.predict_run import make_tiny_run

    return make_tiny_run(tmp_path_factory, spark)


@pytest.fixture(scope="session")
def sessions_ingested(spark, sessions_small, tmp_path_factory) -> dict:
    """`sessions_small` (about 8k events, an item table with cold-start items) through the ingest stage, once for
    the feature tests and the session-model tests."""
    from features.config import IngestConfig
    from features.ingest import ingest
    from tests.features.feature_stages import sessions_dataset

    out = tmp_path_factory.mktemp("sessions_ingest")
    ds = sessions_dataset(sessions_small["path"], sessions_small["items"])
    summary = ingest({"raw": sessions_small["path"], "items": sessions_small["items"]}, out, ds, IngestConfig(), spark)
    return {"dir": out, "dataset": ds, "summary": summary, "truth": sessions_small["truth"]}


@pytest.fixture(scope="session")
def sessions_built(spark, sessions_ingested, tmp_path_factory) -> dict:
    """`sessions_ingested` through the sessions stage, once for the feature tests and the session-model tests; the
    validation period (15%) starts before the generator's cold start."""
    from features.config import SessionsConfig
    from features.sessions import build_sessions

    cfg = SessionsConfig(validation_share=0.15, test_share=0.1)
    out = tmp_path_factory.mktemp("sessions_stage")
    summary = build_sessions({"ingest": sessions_ingested["dir"]}, out, sessions_ingested["dataset"], cfg, spark)
    return {"out": out, "summary": summary, "config": cfg}


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """The MovieLens 100K copy in ../shared/data (skips nothing: tests that need it fail loudly if absent)."""
    p = SHARED_DATA / "ml-100k"
    assert p.exists(), f"{p} is missing; it ships in ../shared/data beside the project"
    return p

"""Fixtures of the feature-stage tests: the generated ctr and session data ingested once per test session."""

from __future__ import annotations

import pytest

from features.config import IngestConfig

from feature_stages import ctr_dataset, sessions_dataset


@pytest.fixture(scope="session")
def ctr_ingested(spark, ctr_small, tmp_path_factory) -> dict:
    """`ctr_small` (20k rows, 9 planted bad lines) through the ingest stage."""
    from features.ingest import ingest

    out = tmp_path_factory.mktemp("ctr_ingest")
    ds = ctr_dataset(ctr_small["path"], ctr_small["truth"])
    summary = ingest({"raw": ctr_small["path"]}, out, ds, IngestConfig(), spark)
    return {"dir": out, "dataset": ds, "summary": summary, "truth": ctr_small["truth"]}


@pytest.fixture(scope="session")
def sessions_ingested(spark, sessions_small, tmp_path_factory) -> dict:
    """`sessions_small` (about 8k events, an item table with cold-start items) through the ingest stage."""
    from features.ingest import ingest

    out = tmp_path_factory.mktemp("sessions_ingest")
    ds = sessions_dataset(sessions_small["path"], sessions_small["items"])
    summary = ingest({"raw": sessions_small["path"], "items": sessions_small["items"]}, out, ds, IngestConfig(), spark)
    return {"dir": out, "dataset": ds, "summary": summary, "truth": sessions_small["truth"]}

"""Fixtures of the feature-stage tests: the generated ctr data ingested once per test session (the session data's
`sessions_ingested` is in tests/conftest.py: the session-model tests read it too)."""

from __future__ import annotations

import pytest

from features.config import IngestConfig

from feature_stages import ctr_dataset


@pytest.fixture(scope="session")
def ctr_ingested(spark, ctr_small, tmp_path_factory) -> dict:
    """`ctr_small` (20k rows, 9 planted bad lines) through the ingest stage."""
    from features.ingest import ingest

    out = tmp_path_factory.mktemp("ctr_ingest")
    ds = ctr_dataset(ctr_small["path"], ctr_small["truth"])
    summary = ingest({"raw": ctr_small["path"]}, out, ds, IngestConfig(), spark)
    return {"dir": out, "dataset": ds, "summary": summary, "truth": ctr_small["truth"]}

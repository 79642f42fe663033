"""A tiny CTR store built once per test session (data and times in tiny_ctr.py)."""

from __future__ import annotations

import pytest
from tiny_ctr import EVENTS, TTL_DAYS, VOCAB, ctr_dataset, write_ingest


@pytest.fixture(scope="session")
def ctr_store(spark, tmp_path_factory) -> dict:
    from features.aggregates import aggregates
    from features.store.repo import materialize, register
    from jobs.config import StoreConfig

    run = tmp_path_factory.mktemp("tiny_ctr_run")
    df = write_ingest(spark, EVENTS, ["label", "ts", "I1", "C1", "C10", "C11"],
                      "label int, ts long, I1 double, C1 string, C10 string, C11 string", run / "ingest")
    ds = ctr_dataset()
    aggregates({"ingest": run / "ingest"}, run / "aggregates", ds, [1, 7], spark)
    from features.config import VocabConfig
    from features.vocab import build_vocab

    # the real vocab stage; train period = the first two events (T, T+1h), so u2, u3, i3 and c are unseen
    build_vocab({"ingest": run / "ingest"}, run / "vocab", ds, VocabConfig(**VOCAB), spark)
    cfg = StoreConfig(ttl_days=TTL_DAYS, windows_days=[1, 7])
    registered = register({"aggregates": run / "aggregates", "vocab": run / "vocab"}, run / "store", ds, cfg, spark)
    materialized = materialize(run / "store")
    return {"run": run, "store": run / "store", "events": df, "dataset": ds, "cfg": cfg,
            "registered": registered, "materialized": materialized}

"""Fixtures of the training tests: a tiny encoded CTR data set and its dense embedding plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.encoded_data import dense_plan, encode_generated_ctr

# a few informative features, the XOR pair and two noise features keep the runs fast
FEATURES = ["C1", "C2", "C4", "C7", "C8", "C10", "C11", "C14"]


@pytest.fixture(scope="session")
def encoded_ctr(tmp_path_factory) -> dict:
    """6000 generated rows encoded like the vocab stage; returns paths, schema and plan file."""
    from features.synthetic import generate

    raw = tmp_path_factory.mktemp("ctr_raw")
    generate("ctr", rows=6000, seed=11, output=raw)
    vocab = tmp_path_factory.mktemp("vocab")
    schema = encode_generated_ctr(raw, vocab, features=FEATURES)
    plan_dir = tmp_path_factory.mktemp("plan")
    plan = dense_plan(schema, dim=8)
    plan.save(plan_dir / "embedding_plan.json")
    return {"vocab": vocab, "plan": plan_dir, "schema": schema, "plan_obj": plan}

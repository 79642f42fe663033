"""DSL's frequency-aware masks get their id counts from the vocab stage."""

from __future__ import annotations

import pandas as pd
import torch

from embeddings.spec import EmbeddingPlan, TableSpec
from pipelines.ctr.loop import _id_frequencies


def test_id_frequencies_from_vocab(tmp_path):
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    pd.DataFrame({"feature": ["C1", "C1", "C2"], "value": ["a", "b", "x"], "id": [2, 3, 2], "count": [9, 4, 7]}) \
        .to_parquet(vocab / "part-0.parquet")
    plan = EmbeddingPlan(tables=[TableSpec("t_C1", ["C1"], rows=5, dim=4),
                                 TableSpec("t_C2", ["C2"], rows=2, dim=4, method="hashing", params={"buckets": 2})])
    freqs = _id_frequencies(vocab, plan)
    assert list(freqs) == ["t_C1"]                      # the hashed table is not indexed by vocab ids
    assert torch.equal(freqs["t_C1"], torch.tensor([0, 0, 9, 4, 0], dtype=torch.float64))
    assert _id_frequencies(tmp_path / "absent", plan) == {}

"""Hybrid M2TRec ranked with the metadata-only model: cold items keep exactly the metadata-only ranks."""

from __future__ import annotations

import pytest
import torch

from models.cold_ranks import ColdRankHybrid, merge_ranks
from pipelines.runtime.config import ModelConfig
from pipelines.sessions.data import load_sessions
from pipelines.sessions.evaluate import evaluate_session_model
from pipelines.sessions.layout import synthetic_layout
from pipelines.sessions.ranking_metrics import ranks_from_scores
from pipelines.sessions.train import build_model


def test_cold_items_take_the_metadata_positions_and_warm_items_the_rest_in_hybrid_order():
    hybrid = torch.tensor([[0.9, 0.1, 5.0, 0.3, 0.2]])
    meta = torch.tensor([[0.2, 0.1, 0.5, 0.0, 0.3]])        # metadata order: 2, 4, 0, 1, 3
    cold = torch.tensor([False, False, True, False, True])
    order = (-merge_ranks(hybrid, meta, cold)).argsort(1).tolist()
    assert order == [[2, 4, 0, 3, 1]]                       # cold 2, 4 at 0, 1; warm 0, 3, 1 as the hybrid ranks them


def test_metadata_ties_are_broken_by_the_tie_priority_as_the_evaluation_does():
    meta = torch.tensor([[0.5, 0.5, 0.5]])
    cold = torch.tensor([True, True, False])
    prio = torch.tensor([2, 0, 1])                          # item 1 first, then 2, then 0
    merged = merge_ranks(torch.zeros(1, 3), meta, cold, prio)
    assert (-merged).argsort(1).tolist() == [[1, 2, 0]]
    for target in (0, 1):
        t = torch.tensor([target])
        assert ranks_from_scores(merged, t, prio).tolist() == ranks_from_scores(meta, t, prio).tolist()


def test_random_scores_keep_every_cold_rank_and_the_hybrid_order_of_warm_items():
    g = torch.Generator().manual_seed(0)
    hybrid, meta = torch.randn(8, 50, generator=g), torch.randn(8, 50, generator=g)
    cold = torch.rand(50, generator=g) < 0.3
    merged = merge_ranks(hybrid, meta, cold)
    assert merged.unique(dim=1).shape[1] == 50                                   # distinct scores: no ties left
    for item in cold.nonzero().squeeze(1).tolist():
        t = torch.full((8,), item)
        assert torch.equal(ranks_from_scores(merged, t), ranks_from_scores(meta, t))
    warm = (~cold).nonzero().squeeze(1)
    assert torch.equal(merged[:, warm].argsort(1), hybrid[:, warm].argsort(1))   # warm items keep the hybrid's order


@pytest.fixture(scope="module")
def data(sessions_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("cold_ranks_layout")
    synthetic_layout(sessions_small["path"], sessions_small["items"], out)
    return load_sessions(out)


def test_cold_targets_score_exactly_as_with_the_metadata_only_model(data):
    torch.manual_seed(0)
    cfg = dict(name="m2trec", hidden=16, layers=1, heads=2, max_length=10, task_attributes=[], loss_weights=[1.0])
    hybrid = build_model(ModelConfig(item_ids="on", **cfg), data)
    meta = build_model(ModelConfig(item_ids="off", **cfg), data)
    both = ColdRankHybrid(hybrid, meta)
    ev = dict(split="test", positions=3, ks=[5, 20], max_length=10, seed=1)
    got, want, alone = (evaluate_session_model(m, data, **ev) for m in (both, meta, hybrid))
    assert got["cold"]["n"] > 20 and got["warm"]["n"] > 20
    assert got["cold"] == want["cold"]                      # every cold figure equal, not just close
    assert alone["cold"] != want["cold"]                    # the hybrid alone ranks cold items differently
    assert both.embedding_bytes() == hybrid.embedding_bytes() + meta.embedding_bytes()


def test_it_needs_a_hybrid_and_a_metadata_only_model(data):
    cfg = dict(name="m2trec", hidden=16, layers=1, heads=2, max_length=10, task_attributes=[], loss_weights=[1.0])
    meta = build_model(ModelConfig(item_ids="off", **cfg), data)
    with pytest.raises(ValueError, match="hybrid M2TRec"):
        ColdRankHybrid(meta, meta)

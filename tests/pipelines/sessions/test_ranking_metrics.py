"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.sessions.ranking_metrics import mrr_at_k, ndcg_at_k, ranking_metrics, ranks_from_scores, recall_at_k


def test_metrics_match_hand_computed_values():
    ranks = np.array([1, 2, 5, 10, 11, 40])
    assert recall_at_k(ranks, 10) == pytest.approx(4 / 6)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 6)
    assert mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 6)
    assert mrr_at_k(ranks, 20) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 11) / 6)
    expected_ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    m = ranking_metrics(ranks, ks=[10, 20])
    assert m["n"] == 6 and m["recall@20"] == pytest.approx(5 / 6) and m["ndcg@10"] == pytest.approx(expected_ndcg)


def test_empty_slices_give_nan_not_an_error():
    assert math.isnan(recall_at_k(np.array([]), 10)) and math.isnan(ndcg_at_k(np.array([]), 10))


def test_ranks_from_scores_counts_higher_scores_and_breaks_ties():
    scores = torch.tensor([[0.0, 0.3, 0.9, 0.3, -torch.inf],
                           [0.0, 0.1, 0.2, 0.3, 0.4]])
    targets = torch.tensor([1, 4])
    assert ranks_from_scores(scores, targets).tolist() == [3, 1]              # tie with column 3 counts against
    assert ranks_from_scores(scores, targets, torch.tensor([0, 0, 1, 2, 3])).tolist() == [2, 1]
    # an unscorable (-inf) target ranks after every finite score
    assert ranks_from_scores(scores, torch.tensor([4, 0])).tolist() == [5, 5]

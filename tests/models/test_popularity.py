"""Popularity baseline: the same ranking for every session, by training count; unseen items at the bottom."""

from __future__ import annotations

import torch

from models.popularity import Popularity
from pipelines.sessions.ranking_metrics import ranks_from_scores


def test_ranks_items_by_training_count_whatever_the_session():
    m = Popularity(torch.tensor([0, 3, 10, 0, 1]))
    rep, tasks = m(torch.tensor([[1, 2], [4, 0]]), torch.tensor([2, 1]))
    scores = rep @ m.encode_catalogue().T
    scores[:, ~m.scorable()] = -torch.inf
    assert tasks == {}
    assert scores.argsort(1, descending=True)[:, :3].tolist() == [[2, 1, 4], [2, 1, 4]]
    assert ranks_from_scores(scores, torch.tensor([2, 4])).tolist() == [1, 3]
    # the never-seen item 3 ranks after every item seen in training (pessimistic ties: last)
    assert ranks_from_scores(scores, torch.tensor([3, 3])).tolist() == [4, 4]
    assert m.embedding_bytes() == 5 * 4

"""Ranking metrics for next-item prediction: ranks from scores, Recall@K, MRR@K, NDCG@K.

Pure functions over 1-based ranks of the one relevant item per query (numpy in, floats out).
With a single relevant item: Recall@K = share of queries with rank <= K; MRR@K = mean of
1/rank over those (0 otherwise); NDCG@K = mean of 1/log2(rank + 1) over those (the ideal DCG is 1).

Example:
    >>> r = np.array([1, 3, 11])
    >>> recall_at_k(r, 10), round(mrr_at_k(r, 10), 4), round(ndcg_at_k(r, 10), 4)
    (0.6666666666666666, 0.4444, 0.5)
"""

from __future__ import annotations

import numpy as np
import torch


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, tie_priority: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each row's target among its candidates (columns).

    Candidates scoring `-inf` (not scorable) rank after every finite score. Ties are broken by
    `tie_priority` (a per-column key, e.g. a seeded random permutation: lower goes first); without
    it, ties count against the target (pessimistic).

    Example:
        >>> s = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
        >>> ranks_from_scores(s, torch.tensor([2])).tolist(), ranks_from_scores(s, torch.tensor([2]), torch.tensor([3, 2, 0, 1])).tolist()
        ([3], [2])
    """
    t = scores.gather(1, targets[:, None])
    higher = (scores > t).sum(1)
    tied = scores == t
    if tie_priority is None:
        ahead = tied.sum(1) - 1
    else:
        ahead = (tied & (tie_priority[None, :] < tie_priority[targets][:, None])).sum(1)
    return 1 + higher + ahead


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose target is in the top k (nan for no queries)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks <= k)) if ranks.size else float("nan")


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 for targets outside the top k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0))) if ranks.size else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Normalised DCG with one relevant item: 1/log2(rank + 1) inside the top k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0))) if ranks.size else float("nan")


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] | list[int] = (10, 20)) -> dict[str, float]:
    """Recall@K, MRR@K, NDCG@K for every K, plus the number of queries `n`.

    Example:
        >>> ranking_metrics(np.array([1, 30]), ks=[10])
        {'n': 2, 'recall@10': 0.5, 'mrr@10': 0.5, 'ndcg@10': 0.5}
    """
    out: dict[str, float] = {"n": int(np.asarray(ranks).size)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"mrr@{k}"] = mrr_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    return out

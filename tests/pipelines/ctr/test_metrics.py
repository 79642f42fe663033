"""CTR metrics against brute-force references on small arrays."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipelines.ctr.metrics import auc, calibration, expected_calibration_error, log_loss, slice_auc


def _pairwise_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = rng.integers(0, 5, 40).astype(float)   # many ties
    assert auc(y, s) == pytest.approx(_pairwise_auc(y, s))
    assert auc(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.9])))


def test_log_loss_by_hand():
    assert log_loss(np.array([1, 0, 1]), np.array([0.8, 0.3, 0.5])) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3)


def test_calibration_bins_and_error():
    p = np.array([0.1, 0.1, 0.2, 0.2, 0.8, 0.8, 0.9, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    bins = calibration(y, p, bins=2)
    assert bins == [{"predicted": pytest.approx(0.15), "observed": 0.25, "count": 4},
                    {"predicted": pytest.approx(0.85), "observed": 0.75, "count": 4}]
    assert expected_calibration_error(bins) == pytest.approx(0.1)


def test_slice_auc_takes_most_frequent_values():
    values = np.array([7] * 6 + [3] * 4 + [9] * 2)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1])
    p = np.array([.1, .9, .2, .8, .3, .7, .6, .4, .5, .5, .1, .2])
    out = slice_auc(y, p, values, top=2, min_rows=1)
    assert [r["value"] for r in out] == [7, 3]
    assert out[0]["auc"] == 1.0 and out[0]["rows"] == 6
    assert out[1]["auc"] == pytest.approx(_pairwise_auc(y[6:10], p[6:10]))

"""features/mi.py and features/estimators.py against hand-made tables and a direct numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.errors import ConfigError
from features.estimators import ESTIMATORS, get_estimator
from features.mi import (CountStats, adjusted_mutual_information, count_histogram, entropy,
                         expected_mutual_information, mutual_information, select_3mr)


# ---- the reference: definitions written out cell by cell, no grouping, no windows -------------

def ref_mi(table: np.ndarray) -> float:
    t = np.asarray(table, dtype=float)
    n = t.sum()
    a, b = t.sum(1), t.sum(0)
    return sum(t[i, j] / n * math.log(n * t[i, j] / (a[i] * b[j]))
               for i in range(t.shape[0]) for j in range(t.shape[1]) if t[i, j] > 0)


def ref_emi(a: list[int], b: list[int]) -> float:
    """Vinh et al. (2009) eq. for E[MI] with the exact hypergeometric probability (math.comb)."""
    n = sum(a)
    total = 0.0
    for ai in a:
        for bj in b:
            for k in range(max(1, ai + bj - n), min(ai, bj) + 1):
                p = math.comb(bj, k) * math.comb(n - bj, ai - k) / math.comb(n, ai)
                total += k / n * math.log(n * k / (ai * bj)) * p
    return total


def table_of(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    t = np.zeros((xi.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(t, (xi, yi), 1)
    return t


# ---- entropies and MI ----------------------------------------------------------------------------

def test_perfectly_predictive_binary_feature_has_mi_equal_to_label_entropy():
    t = np.array([[30, 0], [0, 10]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy(np.array([30, 10])) == pytest.approx(h, abs=1e-15)
    assert mutual_information(t) == pytest.approx(h, abs=1e-15)
    assert get_estimator("mi").score(CountStats.from_table(t)) == pytest.approx(0.5623351446188083, abs=1e-15)


def test_independent_feature_has_zero_mi():
    assert mutual_information(np.array([[20, 10], [40, 20]])) == pytest.approx(0.0, abs=1e-15)


def test_mi_and_emi_match_the_cell_by_cell_reference_on_random_tables():
    rng = np.random.default_rng(0)
    for rows, card in ((60, 3), (200, 30), (150, 150)):
        t = table_of(rng.integers(0, card, rows), rng.integers(0, 2, rows))
        s = CountStats.from_table(t)
        assert s.mi() == pytest.approx(ref_mi(t), abs=1e-12)
        assert s.expected_mi() == pytest.approx(ref_emi(list(t.sum(1)), list(t.sum(0))), abs=1e-12)


def test_feature_feature_emi_is_symmetric_and_matches_reference():
    a, b = [5, 3, 3, 1, 8], [7, 7, 2, 4]
    ha, hb = count_histogram(np.array(a)), count_histogram(np.array(b))
    emi = expected_mutual_information(*ha, *hb)
    assert emi == pytest.approx(ref_emi(a, b), abs=1e-12)
    assert expected_mutual_information(*hb, *ha) == pytest.approx(emi, abs=1e-12)


def test_emi_terms_from_the_log_factorial_table_equal_the_gammaln_terms_exactly():
    """The looked-up log(m!) give bit for bit the sums that calling gammaln per term gave (#14)."""
    from scipy.special import gammaln

    from features.mi import _emi_terms

    def per_term(a, b, n):   # the previous body: gammaln for every (pair, k) term, np.add.at
        lo = np.maximum(1.0, a + b - n)
        hi = np.minimum(a, b)
        mean = a * b / n
        sd = np.sqrt(np.maximum(a * b * (n - a) * (n - b) / (n * n * max(n - 1, 1)), 0.0))
        lo = np.maximum(lo, np.floor(mean - 12.0 * sd - 10))
        hi = np.minimum(hi, np.ceil(mean + 12.0 * sd + 10))
        width = np.maximum(hi - lo + 1, 0).astype(np.int64)
        owner = np.repeat(np.arange(a.shape[0]), width)
        k = lo[owner] + (np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width))
        aa, bb = a[owner], b[owner]
        log_pmf = (gammaln(bb + 1) - gammaln(k + 1) - gammaln(bb - k + 1) + gammaln(n - bb + 1) - gammaln(aa - k + 1)
                   - gammaln(n - bb - aa + k + 1) - gammaln(n + 1) + gammaln(aa + 1) + gammaln(n - aa + 1))
        out = np.zeros(a.shape[0])
        np.add.at(out, owner, (k / n) * np.log(n * k / (aa * bb)) * np.exp(log_pmf))
        return out

    rng = np.random.default_rng(4)
    for n in (40, 5_000, 200_000):
        a = rng.integers(1, n // 2, 300).astype(np.float64)
        b = rng.integers(1, n // 3, 300).astype(np.float64)
        a[:5], b[:5] = [1, 2, 3, n // 2, 7], [1, n // 3, 2, 9, n // 3]
        np.testing.assert_array_equal(_emi_terms(a, b, n), per_term(a, b, n))


# ---- the estimators, one hand-made table each --------------------------------------------------

def test_registry_holds_exactly_the_three_estimators():
    assert list(ESTIMATORS) == ["mi", "mi-shifted", "mi-permutation"]
    assert [ESTIMATORS[n].noise_corrected for n in ESTIMATORS] == [False, True, True]


def test_unknown_heuristic_is_rejected_with_the_valid_names():
    for bad in ("MI", "mi-numba-randomized", "mi_permutation", "permutation"):
        with pytest.raises(ConfigError) as err:
            get_estimator(bad)
        msg = str(err.value)
        assert "\n" not in msg and "mi, mi-shifted, mi-permutation" in msg and bad in msg


def test_mi_permutation_scores_all_distinct_values_exactly_zero():
    # two rows, two distinct values: MI is ln 2 whatever the labels, so E[MI] is ln 2 as well
    t = np.array([[1, 0], [0, 1]])
    s = CountStats.from_table(t)
    assert s.mi() == pytest.approx(math.log(2), abs=1e-15)
    assert get_estimator("mi-permutation").score(s) == pytest.approx(0.0, abs=1e-15)


def test_mi_permutation_on_a_hand_table():
    # 3 values with 2 rows each, labels 4:2. E[MI] by hand: for a value with 2 rows and class
    # sizes 4 and 2 (N=6): P(k | 2, 4) = C(4,k)C(2,2-k)/C(6,2) -> k=1: 8/15, k=2: 6/15; k | 2, 2: 1: 8/15, 2: 1/15
    t = np.array([[2, 0], [2, 0], [0, 2]])
    n = 6
    f = lambda k, a, b: k / n * math.log(n * k / (a * b))
    per_value = (8 / 15 * f(1, 2, 4) + 6 / 15 * f(2, 2, 4)) + (8 / 15 * f(1, 2, 2) + 1 / 15 * f(2, 2, 2))
    mi = entropy(np.array([4, 2]))                 # the table is perfectly predictive
    score = get_estimator("mi-permutation").score(CountStats.from_table(t))
    assert score == pytest.approx(mi - 3 * per_value, abs=1e-14)


def test_mi_shifted_subtracts_the_mean_background_mi():
    t = np.array([[8, 2], [2, 8]])
    bg1 = np.array([[5, 5], [5, 5]])              # background copy 1: independent -> MI 0
    bg2 = np.array([[10, 0], [0, 10]])            # background copy 2: ln 2
    s = CountStats.from_table(t, background=[bg1, bg2])
    expected = ref_mi(t) - (0.0 + math.log(2)) / 2
    assert get_estimator("mi-shifted").score(s) == pytest.approx(expected, abs=1e-14)
    with pytest.raises(ValueError):
        get_estimator("mi-shifted").score(CountStats.from_table(t))


@pytest.mark.parametrize("cardinality", [3, 30, 1_000, 100_000, 1_000_000])
def test_noise_scores_near_zero_at_every_cardinality(cardinality):
    rng = np.random.default_rng(cardinality)
    n = 20_000
    y = (rng.random(n) < 0.25).astype(int)
    scores, raw = [], []
    for _ in range(3):
        x = rng.integers(0, cardinality, n)
        s = CountStats.from_table(table_of(x, y))
        scores.append(get_estimator("mi-permutation").score(s))
        raw.append(s.mi())
    assert abs(np.mean(scores)) < 0.002, scores
    if cardinality >= 1_000:
        assert np.mean(raw) > 0.02        # what the correction removes: plain MI grows with cardinality


def test_adjusted_mi_is_one_for_a_copy_and_near_zero_for_independent_features():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 8, 5000)
    z = rng.integers(0, 8, 5000)
    for other, expected, tol in ((x, 1.0, 1e-12), (z, 0.0, 0.01)):
        t = table_of(x, other)
        ha, hb = count_histogram(t.sum(1)), count_histogram(t.sum(0))
        emi = expected_mutual_information(*ha, *hb)
        ami = adjusted_mutual_information(ref_mi(t), emi, entropy(t.sum(1)), entropy(t.sum(0)))
        assert ami == pytest.approx(expected, abs=tol)


# ---- 3MR -----------------------------------------------------------------------------------------

def test_3mr_pushes_a_redundant_copy_down_and_pulls_an_xor_pair_up():
    names = ["strong", "copy", "medium", "xor_a", "xor_b", "noise"]
    rel = np.array([0.30, 0.29, 0.10, 0.0, 0.0, 0.001])
    red = np.zeros((6, 6))
    red[0, 1] = red[1, 0] = 0.95
    gain = np.zeros((6, 6))
    gain[3, 4] = gain[4, 3] = 0.12
    order = select_3mr(names, rel, red, gain, pair_weight=0.5, min_score=0.01)
    assert [n for n, _, _ in order] == ["strong", "medium", "xor_a", "xor_b", "copy", "noise"]
    steps = {n: (score, sel) for n, score, sel in order}
    assert steps["copy"][0] == pytest.approx(0.29 - 0.95 * 0.29, abs=1e-12)
    assert steps["xor_a"][0] == pytest.approx(0.06, abs=1e-12)
    assert [n for n, _, sel in order if sel] == ["strong", "medium", "xor_a", "xor_b", "copy"]
    assert [n for n, _, sel in select_3mr(names, rel, red, gain, k=2)if sel] == ["strong", "medium"]

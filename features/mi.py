"""Entropies, mutual information and its noise corrections from count tables (pure numpy).

Everything here works on counts, never on rows, so the same functions serve a 20-row test table
and the aggregated output of a Spark job over a billion rows. Logarithms are natural (nats).

The sufficient statistics of one feature against a class label are:

- `class_counts` b_k (rows per label class), N = sum(b_k);
- the value-count histogram: distinct row counts a of the feature's values and how many values
  have each count (`value_counts`, `multiplicity`); a missing value counts as one more value;
- `joint_xlogx` = sum over (value, class) cells of n log n.

From them: MI = (joint_xlogx - sum m a log a - sum b log b + N log N) / N, and the expected MI
under a random permutation of the label (Vinh, Epps & Bailey 2009, the "adjusted MI" numerator),
which depends on the value counts only through their histogram. That is why a feature with 10^6
values needs no more than its few hundred distinct counts here.

Example:
    >>> import numpy as np
    >>> t = np.array([[30, 0], [0, 10]])        # a perfectly predictive binary feature
    >>> round(mutual_information(t), 12) == round(entropy(np.array([30, 10])), 12)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.special import gammaln

# Hypergeometric mass beyond this many standard deviations from the mean is below e^-70 of the
# total (Hoeffding), far under double precision: the EMI sum skips it.
_TAIL_SD = 12.0


def xlogx(x: np.ndarray | float) -> np.ndarray:
    """Elementwise x*log(x) with 0*log(0) = 0.

    Example:
        >>> float(xlogx(np.array([0.0, 1.0]))[1])
        0.0
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos])
    return out


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a distribution given by counts.

    Example:
        >>> round(entropy(np.array([5, 5])), 6)
        0.693147
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum()
    if n <= 0:
        return 0.0
    return float((n * np.log(n) - xlogx(c).sum()) / n)


def mi_from_sums(joint_xlogx: float, row_xlogx: float, col_counts: np.ndarray) -> float:
    """MI (nats) from sum n_ij log n_ij, sum a_i log a_i and the column totals b_j.

    Example:
        >>> t = np.array([[3, 1], [1, 3]])
        >>> abs(mi_from_sums(xlogx(t).sum(), xlogx(t.sum(1)).sum(), t.sum(0)) - mutual_information(t)) < 1e-15
        True
    """
    b = np.asarray(col_counts, dtype=np.float64)
    n = b.sum()
    if n <= 0:
        return 0.0
    return float((joint_xlogx - row_xlogx - xlogx(b).sum() + n * np.log(n)) / n)


def mutual_information(table: np.ndarray) -> float:
    """MI (nats) of the two variables whose contingency table (rows x columns of counts) is given.

    Example:
        >>> round(mutual_information(np.array([[10, 10], [10, 10]])), 12)
        0.0
    """
    t = np.asarray(table, dtype=np.float64)
    return mi_from_sums(xlogx(t).sum(), xlogx(t.sum(axis=1)).sum(), t.sum(axis=0))


def count_histogram(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct positive counts and how often each occurs: the only shape EMI needs.

    Example:
        >>> count_histogram(np.array([1, 3, 1, 0]))
        (array([1, 3]), array([2, 1]))
    """
    c = np.asarray(counts, dtype=np.int64)
    values, mult = np.unique(c[c > 0], return_counts=True)
    return values, mult.astype(np.int64)


def _emi_terms(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """sum over n_ij of (n_ij/N) log(N n_ij / (a b)) P(n_ij | a, b, N) for each pair (a[i], b[i])."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lo = np.maximum(1.0, a + b - n)
    hi = np.minimum(a, b)
    mean = a * b / n
    sd = np.sqrt(np.maximum(a * b * (n - a) * (n - b) / (n * n * max(n - 1, 1)), 0.0))
    lo = np.maximum(lo, np.floor(mean - _TAIL_SD * sd - 10))
    hi = np.minimum(hi, np.ceil(mean + _TAIL_SD * sd + 10))
    width = np.maximum(hi - lo + 1, 0).astype(np.int64)
    total = int(width.sum())
    out = np.zeros(a.shape[0])
    if total == 0:
        return out
    owner = np.repeat(np.arange(a.shape[0]), width)
    start = np.repeat(np.cumsum(width) - width, width)
    k = lo[owner] + (np.arange(total) - start)
    aa, bb = a[owner], b[owner]
    # log(m!) looked up, not recomputed per term: the same gammaln values, a fraction of the cost
    lf = _log_factorials(int(n))
    ki, ai, bi = k.astype(np.int64), aa.astype(np.int64), bb.astype(np.int64)
    log_pmf = (lf[bi] - lf[ki] - lf[bi - ki]
               + lf[n - bi] - lf[ai - ki] - lf[n - bi - ai + ki]
               - lf[n] + lf[ai] + lf[n - ai])
    term = (k / n) * np.log(n * k / (aa * bb)) * np.exp(log_pmf)
    return np.bincount(owner, weights=term, minlength=a.shape[0])


@lru_cache(maxsize=2)
def _log_factorials(n: int) -> np.ndarray:
    """log(m!) for m = 0..n (gammaln(m + 1)); read-only, cached for the last two `n`.

    Example:
        >>> bool(np.isclose(np.exp(_log_factorials(4)[4]), 24.0))
        True
    """
    lf = gammaln(np.arange(n + 1, dtype=np.float64) + 1.0)
    lf.flags.writeable = False
    return lf


def expected_mutual_information(row_counts: np.ndarray, row_mult: np.ndarray,
                                col_counts: np.ndarray, col_mult: np.ndarray | None = None,
                                chunk: int = 4_000_000) -> float:
    """E[MI] (nats) when one variable is randomly permuted against the other, marginals fixed.

    Rows and columns are given as count histograms (distinct counts and their multiplicities;
    for a class label, `col_counts` are the class totals and `col_mult` defaults to ones).

    Example:
        >>> emi = expected_mutual_information(np.array([1]), np.array([40]), np.array([30, 10]))
        >>> abs(emi - entropy(np.array([30, 10]))) < 1e-12      # all-distinct values: MI is H(Y) by chance
        True
    """
    ra = np.asarray(row_counts, dtype=np.int64)
    rm = np.asarray(row_mult, dtype=np.float64)
    cb = np.asarray(col_counts, dtype=np.int64)
    cm = np.ones(cb.shape[0]) if col_mult is None else np.asarray(col_mult, dtype=np.float64)
    keep_r, keep_c = ra > 0, cb > 0
    ra, rm, cb, cm = ra[keep_r], rm[keep_r], cb[keep_c], cm[keep_c]
    n = int((ra * rm).sum())
    if n == 0 or ra.size == 0 or cb.size == 0:
        return 0.0
    total = 0.0
    # pairs of (row count, column count), processed in blocks of columns to bound memory
    per_col = max(1, chunk // max(1, int(np.minimum(ra, 64).sum())))
    for s in range(0, cb.size, per_col):
        b_blk, m_blk = cb[s:s + per_col], cm[s:s + per_col]
        a_rep = np.tile(ra, b_blk.size)
        b_rep = np.repeat(b_blk, ra.size)
        w = np.tile(rm, b_blk.size) * np.repeat(m_blk, ra.size)
        total += float((w * _emi_terms(a_rep, b_rep, n)).sum())
    return total


def adjusted_mutual_information(mi: float, emi: float, h_a: float, h_b: float) -> float:
    """Chance-adjusted MI in [<=1]: (MI - E[MI]) / (mean(H_a, H_b) - E[MI]); 0 when undefined.

    Example:
        >>> adjusted_mutual_information(0.5, 0.0, 0.5, 0.5)
        1.0
    """
    den = 0.5 * (h_a + h_b) - emi
    if den <= 1e-12:
        return 0.0
    return float((mi - emi) / den)


@dataclass
class CountStats:
    """Sufficient statistics of one feature (or feature pair) against the label.

    `background_*` hold the same sums against P seeded random copies of the label (for the
    `mi-shifted` estimator); they are empty when no estimator asked for them.
    """

    class_counts: np.ndarray
    value_counts: np.ndarray
    multiplicity: np.ndarray
    joint_xlogx: float
    background_class_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    background_joint_xlogx: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def rows(self) -> int:
        return int(np.asarray(self.class_counts).sum())

    @property
    def row_xlogx(self) -> float:
        return float((xlogx(self.value_counts) * self.multiplicity).sum())

    @property
    def values(self) -> int:
        return int(np.asarray(self.multiplicity).sum())

    def mi(self) -> float:
        """Plain MI with the label."""
        return mi_from_sums(self.joint_xlogx, self.row_xlogx, self.class_counts)

    def expected_mi(self) -> float:
        """Expected MI with a permuted label (exact, hypergeometric model)."""
        return expected_mutual_information(self.value_counts, self.multiplicity, self.class_counts)

    def background_mi(self) -> np.ndarray:
        """MI with each random copy of the label."""
        rx = self.row_xlogx
        return np.array([mi_from_sums(j, rx, c) for j, c in
                         zip(self.background_joint_xlogx, self.background_class_counts)])

    @classmethod
    def from_table(cls, table: np.ndarray, background: list[np.ndarray] | None = None) -> "CountStats":
        """Stats of a values x classes count table (and optional tables against label copies).

        Example:
            >>> CountStats.from_table(np.array([[3, 1], [1, 3]])).values
            2
        """
        t = np.asarray(table, dtype=np.int64)
        vc, mult = count_histogram(t.sum(axis=1))
        bg = background or []
        return cls(class_counts=t.sum(axis=0), value_counts=vc, multiplicity=mult,
                   joint_xlogx=float(xlogx(t).sum()),
                   background_class_counts=np.array([np.asarray(g).sum(axis=0) for g in bg]).reshape(len(bg), t.shape[1]),
                   background_joint_xlogx=np.array([float(xlogx(g).sum()) for g in bg]))


def select_3mr(names: list[str], relevance: np.ndarray, redundancy: np.ndarray, pair_gain: np.ndarray,
               relevance_weight: float = 1.0, redundancy_weight: float = 1.0, pair_weight: float = 0.5,
               k: int | None = None, min_score: float = 0.0) -> list[tuple[str, float, bool]]:
    """3MR-style greedy order: relevance - redundancy + pair relevance, one feature at a time.

    At each step the candidate `a` with the largest
    `relevance_weight*rel(a) - redundancy_weight*max_{s selected} red(a,s)*rel(a) + pair_weight*max_b gain(a,b)`
    is taken. `redundancy` is a chance-adjusted MI between features in [0, 1] (so the penalty is
    the share of `a`'s relevance that the most similar selected feature already carries) and
    `pair_gain[a, b]` the label information the pair has beyond its two members (XOR-like
    synergy; negative values count as 0). Returns (name, marginal score, selected) in order;
    `selected` is true for the first `k` whose marginal score is at least `min_score`.

    Example:
        >>> red = np.array([[1, .9, 0], [.9, 1, 0], [0, 0, 1]])
        >>> [n for n, _, _ in select_3mr(["a", "a_copy", "b"], np.array([.3, .29, .2]), red, np.zeros((3, 3)))]
        ['a', 'b', 'a_copy']
    """
    rel = np.asarray(relevance, dtype=np.float64)
    red = np.clip(np.nan_to_num(np.asarray(redundancy, dtype=np.float64)), 0.0, 1.0)
    gain = np.clip(np.nan_to_num(np.asarray(pair_gain, dtype=np.float64)), 0.0, None)
    np.fill_diagonal(gain, 0.0)
    pair_term = gain.max(axis=1) if gain.size else np.zeros_like(rel)
    remaining = list(range(len(names)))
    worst_red = np.zeros(len(names))
    order: list[tuple[str, float, bool]] = []
    taken = 0
    while remaining:
        idx = np.array(remaining)
        score = (relevance_weight * rel[idx] - redundancy_weight * worst_red[idx] * np.maximum(rel[idx], 0.0)
                 + pair_weight * pair_term[idx])
        # ties (e.g. several exact zeros) are broken by name so the order is reproducible
        best = min(range(len(idx)), key=lambda j: (-score[j], names[idx[j]]))
        i = int(idx[best])
        chosen = (k is None or taken < k) and score[best] >= min_score
        taken += int(chosen)
        order.append((names[i], float(score[best]), bool(chosen)))
        remaining.remove(i)
        worst_red = np.maximum(worst_red, red[:, i])
    return order

"""The feature-relevance estimators, in a registry keyed by their exact names.

An unknown name is an error listing the valid ones; nothing is matched by substring, so a
renamed heuristic can never silently score every feature 0 (the failure that hurt OutRank).

- `mi`: plain mutual information feature <-> label (nats). Grows with cardinality even for noise.
- `mi-shifted`: OutRank's cardinality correction: MI minus the MI of the feature against seeded
  random copies of the label (drawn from the label's own class distribution; the mean over
  `RankConfig.permutations` copies). Unbiased but noisy: the background adds its own variance.
- `mi-permutation` (default): MI minus its exact expectation when the label is permuted
  (hypergeometric model, Vinh et al. 2009). Zero-mean for noise at every cardinality, with no
  sampling noise of its own; needs only the histogram of value counts.

Example:
    >>> get_estimator("mi-permutation").noise_corrected
    True
    >>> get_estimator("MI-numba-randomized")
    Traceback (most recent call last):
    ...
    features.errors.ConfigError: unknown heuristic 'MI-numba-randomized'; choose one of: mi, mi-shifted, mi-permutation (OutRank's MI-numba-randomized is 'mi-shifted').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from features.errors import ConfigError
from features.mi import CountStats


@dataclass(frozen=True)
class Estimator:
    """A named relevance score computed from a feature's `CountStats`."""

    name: str
    score: Callable[[CountStats], float]
    noise_corrected: bool
    needs_background: bool
    description: str


def _mi(s: CountStats) -> float:
    return s.mi()


def _mi_shifted(s: CountStats) -> float:
    bg = s.background_mi()
    if bg.size == 0:
        raise ValueError("mi-shifted needs background label copies in the count stats")
    return s.mi() - float(bg.mean())


def _mi_permutation(s: CountStats) -> float:
    return s.mi() - s.expected_mi()


ESTIMATORS: dict[str, Estimator] = {
    e.name: e for e in (
        Estimator("mi", _mi, False, False, "plain mutual information with the label"),
        Estimator("mi-shifted", _mi_shifted, True, True,
                  "MI minus the mean MI against seeded random copies of the label (OutRank's correction)"),
        Estimator("mi-permutation", _mi_permutation, True, False,
                  "MI minus its exact expectation under a permuted label (adjusted-MI numerator)"),
    )
}


def get_estimator(name: str) -> Estimator:
    """The estimator registered under exactly `name`; a `ConfigError` listing the valid names otherwise."""
    est = ESTIMATORS.get(name)
    if est is None:
        hint = " (OutRank's MI-numba-randomized is 'mi-shifted')" if name.lower().startswith("mi-numba") else ""
        raise ConfigError(f"unknown heuristic '{name}'; choose one of: {', '.join(ESTIMATORS)}{hint}.")
    return est

"""What the rank stage computed, before it is written: per-feature and per-pair scores (plain data).

`features.outrank` computes a `RankResult`; `features.rank_outputs` writes it. Neither imports the other's
caller, so the two modules form no import circle.

Example:
    >>> f = FeatureScore("C1", "categorical", cardinality=3, coverage=1.0, mi=0.1, score=0.09)
    >>> RankResult("label", ["0", "1"], 100, "mi", False, [f]).features[0].name
    'C1'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features.count_tables import GroupCounts


@dataclass
class FeatureScore:
    """One feature's ranking figures (scores in nats)."""

    name: str
    role: str
    cardinality: int
    coverage: float
    mi: float
    score: float
    counts: GroupCounts | None = None
    splits: list[float] | None = None


@dataclass
class PairScore:
    """A feature pair: its label relevance, its synergy (gain) and the redundancy of its members."""

    a: str
    b: str
    cardinality: int
    mi: float
    score: float
    gain: float           # score(pair) - score(a) - score(b): label information only the pair has
    redundancy: float     # chance-adjusted MI between a and b (0 independent, 1 same feature)
    feature_mi: float     # plain MI between a and b (nats)


@dataclass
class RankResult:
    """Everything the rank stage computed, before it is written out."""

    label: str
    classes: list[str]
    rows: int
    heuristic: str
    noise_corrected: bool
    features: list[FeatureScore]              # sorted by score, descending
    pairs: list[PairScore] = field(default_factory=list)   # sorted by gain, descending
    selection: list[tuple[str, float, bool]] = field(default_factory=list)
    pair_rows: int = 0                        # rows the pairs were counted on (< rows when sampled)
    rows_read: int = 0
    rows_malformed: int = 0
    rows_without_label: int = 0
    seconds: dict[str, float] = field(default_factory=dict)   # wall time of each pass

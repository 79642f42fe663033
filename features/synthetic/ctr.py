"""Criteo-like CTR logs: a label, 13 numeric and 26 categorical columns, with planted structure.

Planted (and listed in `truth.json`):
- informative categorical features at low, mid and high cardinality (the high one weak), plus a
  user-like and an ad-like id with their own effects;
- pure-noise features at the same cardinalities as the informative ones, and more noise features
  from 3 to 10^6 values;
- an XOR pair: each feature alone says nothing about the label, the pair together does;
- a near-duplicate (redundant) copy of the strongest feature;
- a feature whose distribution drifts in the last period;
- two informative numeric columns; missing values everywhere except the strongest features.
Rows are in time order (`ts`, epoch seconds over 7 days).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .common import hex_names, intercept_for_rate, write_table, write_truth, zipf_sample


@dataclass(frozen=True)
class CatColumn:
    name: str
    cardinality: int
    role: str  # informative | noise | xor | redundant | drift
    effect_std: float = 0.0
    missing: float = 0.0
    zipf: float = 1.1


CATEGORICAL: tuple[CatColumn, ...] = (
    CatColumn("C1", 8, "informative", 0.9),
    CatColumn("C2", 1_000, "informative", 0.7, missing=0.02),
    CatColumn("C3", 200_000, "informative", 0.6, missing=0.05),   # weak per value, high cardinality
    CatColumn("C4", 8, "noise"),
    CatColumn("C5", 1_000, "noise", missing=0.02),
    CatColumn("C6", 200_000, "noise", missing=0.05),
    CatColumn("C7", 4, "xor", zipf=0.0),
    CatColumn("C8", 4, "xor", zipf=0.0),
    CatColumn("C9", 8, "redundant"),                                # near copy of C1
    CatColumn("C10", 50_000, "informative", 0.5, missing=0.01),    # user-like id
    CatColumn("C11", 10_000, "informative", 0.6),                   # ad-like id
    CatColumn("C12", 3, "noise", missing=0.3),
    CatColumn("C13", 5, "drift", missing=0.1),
    CatColumn("C14", 10, "noise"),
    CatColumn("C15", 30, "noise", missing=0.1),
    CatColumn("C16", 100, "noise"),
    CatColumn("C17", 300, "noise", missing=0.2),
    CatColumn("C18", 3_000, "noise"),
    CatColumn("C19", 10_000, "noise", missing=0.05),
    CatColumn("C20", 30_000, "noise"),
    CatColumn("C21", 100_000, "noise", missing=0.1),
    CatColumn("C22", 300_000, "noise"),
    CatColumn("C23", 1_000_000, "noise", missing=0.05),
    CatColumn("C24", 50, "noise"),
    CatColumn("C25", 500, "noise", missing=0.4),
    CatColumn("C26", 1_000_000, "noise", zipf=0.8),
)
XOR_EFFECT = 1.2
REDUNDANT_NOISE = 0.03
BASE_RATE = 0.25
DAYS = 7


def _missing_mask(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return rng.random(n) < rate if rate > 0 else np.zeros(n, dtype=bool)


def generate_ctr(rows: int, seed: int, output: Path, gzip: bool = False, bad_rows: int = 0) -> dict[str, Any]:
    """Write `output/train.tsv[.gz]` and `output/truth.json`; return the truth.

    Example:
        >>> import tempfile
        >>> truth = generate_ctr(300, seed=1, output=Path(tempfile.mkdtemp()))
        >>> truth["xor_pair"]
        ['C7', 'C8']
    """
    rng = np.random.default_rng(seed)
    n = rows
    ts = np.sort(rng.integers(1_700_000_000, 1_700_000_000 + DAYS * 86_400, size=n))
    late = ts >= ts[0] + int((DAYS - 2) * 86_400)
    logit = np.zeros(n)
    cols: dict[str, Any] = {}
    idx_of: dict[str, np.ndarray] = {}

    # numeric columns: counts-like, two of them carry signal
    num_truth = {}
    for j in range(1, 14):
        x = np.floor(rng.lognormal(mean=1.0 + 0.2 * j, sigma=1.2, size=n))
        if j == 1:
            logit += 0.6 * (np.log1p(x) - np.log1p(x).mean()) / (np.log1p(x).std() + 1e-9)
        if j == 2:
            x = x - 1  # Criteo's I2 holds -1
            logit -= 0.4 * (np.log1p(x + 1) - np.log1p(x + 1).mean()) / (np.log1p(x + 1).std() + 1e-9)
        miss = _missing_mask(rng, 0.0 if j <= 2 else 0.05 * (j % 5), n)
        col = pd.array(x.astype(np.int64), dtype="Int64")
        col[miss] = pd.NA
        cols[f"I{j}"] = col
        num_truth[f"I{j}"] = "informative" if j <= 2 else "noise"

    for c in CATEGORICAL:
        salt = int(c.name[1:]) * 7919
        if c.role == "redundant":
            src = idx_of["C1"].copy()
            flip = rng.random(n) < REDUNDANT_NOISE
            src[flip] = rng.integers(0, c.cardinality, size=int(flip.sum()))
            idx = src
        elif c.role == "drift":
            idx = zipf_sample(rng, c.cardinality, n, c.zipf)
            shifted = (c.cardinality - 1 - zipf_sample(rng, c.cardinality, n, c.zipf))
            idx = np.where(late, shifted, idx)
        elif c.zipf == 0.0:
            idx = rng.integers(0, c.cardinality, size=n)
        else:
            idx = zipf_sample(rng, c.cardinality, n, c.zipf)
            # a random permutation so that the most frequent value is not always index 0
            idx = rng.permutation(c.cardinality)[idx]
        idx_of[c.name] = idx
        miss = _missing_mask(rng, c.missing, n)
        if c.role == "informative":
            effects = rng.normal(0.0, c.effect_std, size=c.cardinality)
            logit += np.where(miss, 0.0, effects[idx])
        values = hex_names(idx, salt).astype(object)
        values[miss] = None
        cols[c.name] = values

    logit += XOR_EFFECT * np.where((idx_of["C7"] + idx_of["C8"]) % 2 == 0, 1.0, -1.0)
    b = intercept_for_rate(logit, BASE_RATE)
    label = (rng.random(n) < 1 / (1 + np.exp(-(logit + b)))).astype(np.int64)

    df = pd.DataFrame({"label": label, "ts": ts, **cols})
    bad_lines: list[str] = []
    positions = np.sort(rng.choice(n, size=min(bad_rows, n), replace=False)) if bad_rows else np.array([], dtype=int)
    kinds = ["wrong_column_count", "non_numeric", "empty_line"]
    bad_kinds = []
    for k in range(len(positions)):
        kind = kinds[k % len(kinds)]
        bad_kinds.append(kind)
        if kind == "wrong_column_count":
            bad_lines.append("1\t1700000000\t5\t3")
        elif kind == "non_numeric":
            fields = ["0", "1700000100", "abc"] + ["1"] * 12 + ["deadbeef"] * 26
            bad_lines.append("\t".join(fields))
        else:
            bad_lines.append("")
    path = write_table(df, output / "train.tsv", "\t", gzip, bad_lines, positions)

    truth = {
        "kind": "ctr", "rows": n, "seed": seed, "file": path.name, "base_rate": BASE_RATE,
        "observed_rate": float(label.mean()),
        "label": "label", "timestamp": "ts",
        "dense": [f"I{j}" for j in range(1, 14)],
        "categorical": [c.name for c in CATEGORICAL],
        "columns": {c.name: asdict(c) for c in CATEGORICAL},
        "numeric_roles": num_truth,
        "informative": [c.name for c in CATEGORICAL if c.role == "informative"],
        "noise": [c.name for c in CATEGORICAL if c.role == "noise"],
        "matched_noise": {"C1": "C4", "C2": "C5", "C3": "C6"},
        "weak_high_cardinality": "C3",
        "xor_pair": ["C7", "C8"],
        "redundant": {"C9": "C1"},
        "drift": ["C13"],
        "user_like": "C10", "item_like": "C11",
        # data-row numbers (1-based, header not counted) of planted malformed lines, after insertion
        "bad_rows": [{"data_line": int(p) + i + 1, "kind": k} for i, (p, k) in enumerate(zip(positions.tolist(), bad_kinds))],
    }
    write_truth(output, truth)
    return truth

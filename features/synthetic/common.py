"""Pieces shared by the generators: Zipf sampling, stable value names, deterministic writing."""

from __future__ import annotations

import gzip as gz
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def zipf_probs(n: int, exponent: float = 1.1) -> np.ndarray:
    """Probabilities of ranks 0..n-1 proportional to 1/(rank+1)^exponent."""
    p = 1.0 / np.power(np.arange(1, n + 1, dtype=np.float64), exponent)
    return p / p.sum()


def zipf_sample(rng: np.random.Generator, n: int, size: int, exponent: float = 1.1) -> np.ndarray:
    """`size` draws of ranks in [0, n) with Zipf-skewed frequencies."""
    cdf = np.cumsum(zipf_probs(n, exponent))
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)


def hex_names(idx: np.ndarray, salt: int) -> np.ndarray:
    """Distinct 8-hex-digit strings for distinct indices (a bijection on 32-bit ints), like Criteo's."""
    h = (idx.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) & np.uint64(0xFFFFFFFF)
    return np.char.mod("%08x", h)


def write_table(df: pd.DataFrame, path: Path, sep: str, gzip: bool, bad_lines: list[str] | None = None,
                bad_positions: np.ndarray | None = None) -> Path:
    """Write `df` as delimited text with a header (missing values as empty fields).

    `bad_lines` are inserted verbatim after the data rows at `bad_positions` (0-based data-row
    indices), so a test can find them again by line number. Gzip output has mtime 0, so the same
    seed gives the same bytes.
    """
    buf = io.StringIO()
    df.to_csv(buf, sep=sep, index=False, na_rep="", lineterminator="\n")
    text = buf.getvalue()
    if bad_lines:
        lines = text.split("\n")
        header, body = lines[0], lines[1:-1]
        for pos, bad in sorted(zip(bad_positions.tolist(), bad_lines), reverse=True):
            body.insert(pos, bad)
        text = "\n".join([header, *body]) + "\n"
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzip:
        path = path.with_name(path.name + ".gz")
        with open(path, "wb") as fh, gz.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as z:
            z.write(data)
    else:
        path.write_bytes(data)
    return path


def write_truth(output: Path, truth: dict[str, Any]) -> None:
    (output / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")


def intercept_for_rate(logits: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(logits + b)) == rate (bisection; logits are fixed)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2

"""Dense bins that know about repeated values: a value holding more than a bin's share gets its own bin, so a
mostly-zero column whose positive part carries the label keeps its mutual information."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.config import RankConfig
from features.discretize import bin_values, splits_from_quantiles


def test_heavy_values_get_a_bin_of_their_own():
    # 80% zeros on a 16-point grid: 0 is alone in [0, 5e-324); the positives share the other bins
    assert splits_from_quantiles([0.0] * 12 + [1.0, 2.0, 3.0], bins=4, fine=4) == [0.0, 5e-324, 1.0, 2.0]
    # no heavy value: the plain quartiles of the grid
    assert splits_from_quantiles([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], bins=4, fine=2) == [2.0, 4.0, 6.0]
    # two heavy values (a default of -1 and 0) and a constant column
    s = splits_from_quantiles([-1.0] * 5 + [0.0] * 6 + [2.0, 4.0, 6.0, 8.0], bins=4, fine=4)
    assert s == [-1.0, float(np.nextafter(-1.0, np.inf)), 0.0, 5e-324, 4.0]
    assert splits_from_quantiles([3.0] * 15, bins=4, fine=4) == [3.0, float(np.nextafter(3.0, np.inf))]
    assert bin_values(np.array([-2.0, -1.0, -0.5, 0.0, 1e-9, 5.0]), s).tolist() == ["b0", "b1", "b2", "b3", "b4", "b5"]


def _mostly_zero(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """90% zeros with P(y=1) = 0.2; positives uniform on (0, 10) with P(y=1) = 0.05 up to 5, 0.9 above.
    Returns x, y and the exact MI (nats) of the generating variable (zero / low / high)."""
    rng = np.random.default_rng(seed)
    zero = rng.random(n) < 0.9
    pos = rng.uniform(0.0, 10.0, n)
    x = np.where(zero, 0.0, pos)
    y = (rng.random(n) < np.where(zero, 0.2, np.where(pos > 5, 0.9, 0.05))).astype(int)

    def h(p):
        p = np.asarray(p, dtype=float)
        return float(-(p[p > 0] * np.log(p[p > 0])).sum())

    py = 0.9 * 0.2 + 0.05 * 0.05 + 0.05 * 0.9
    exact = h([py, 1 - py]) - (0.9 * h([0.2, 0.8]) + 0.05 * h([0.05, 0.95]) + 0.05 * h([0.9, 0.1]))
    return x, y, exact


@pytest.mark.spark
def test_mostly_zero_column_keeps_its_mutual_information(spark, tmp_path: Path):
    from features.outrank import score_features
    from features.rank_source import read_raw

    x, y, exact = _mostly_zero()
    assert exact == pytest.approx(0.0597, abs=1e-4)
    path = tmp_path / "amounts.csv"
    path.write_text("label,amt\n" + "".join(f"{int(b)},{float(v)!r}\n" for b, v in zip(y, x)))
    res = score_features(spark, read_raw(spark, path, "label", "csv", dense=["amt"]),
                         RankConfig(heuristic="mi", bins=16, pairs_top_k=0))
    (f,) = res.features
    assert f.role == "dense" and f.splits[:2] == [0.0, 5e-324]          # zero has a bin of its own
    assert 8 <= len(f.splits) <= 17
    # plain quantile bins (0 and the positives below the 15/16 quantile in one bin) gave 0.039 here
    assert f.mi > 0 and f.mi == pytest.approx(exact, abs=0.004)

"""Dense bins that know about repeated values: a value holding more than a bin's share gets its own bin, so a
mostly-zero column whose positive part carries the label keeps its mutual information."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.config import RankConfig
from features.discretize import bin_index_sql, bin_values, splits_from_quantiles


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


@pytest.mark.spark
@pytest.mark.parametrize("splits", [[], [2.0], [-1.0, float(np.nextafter(-1.0, np.inf)), 0.0, 5e-324, 4.0],
                                    [float(v) for v in range(1, 17)]])
def test_bin_index_sql_is_the_bin_of_bin_values_at_and_between_every_split(spark, splits):
    """The binary-search SQL (#14) puts every value, the splits themselves included, in the bin
    numpy's searchsorted(side='right') gives; missing and NaN stay missing."""
    edges = np.array(splits + [-np.inf, np.inf, -1e300, 1e300], dtype=np.float64)
    x = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), np.linspace(-3, 20, 47)])
    x = x[np.isfinite(x) | np.isinf(x)]
    df = spark.createDataFrame([(float(v),) for v in x] + [(None,), (float("nan"),)], "x double")
    got = [r[0] for r in df.selectExpr(f"{bin_index_sql('x', splits)} AS b").collect()]
    want = [None if v is None else int(v[1:]) for v in bin_values(x, splits)] + [None, None]
    assert got == want

"""The cardinality plot's labels never cover each other, even for features with equal coverage and close cardinality."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from features.quality_render import place_labels, render_plots  # noqa: E402


def test_labels_of_crowded_points_do_not_overlap():
    names = [f"C{i}" for i in range(1, 27)]
    xs = [1000 + 7 * i for i in range(26)]                 # all within 20% of each other on a log axis
    ys = [1.0] * 20 + [0.5] * 6
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    fig.tight_layout()
    boxes = place_labels(ax, names, xs, ys)
    assert len(boxes) == 26
    overlapping = [(a, b) for a, b in itertools.combinations(range(26), 2) if boxes[a].overlaps(boxes[b])]
    assert overlapping == []
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(names)
    plt.close(fig)


def test_render_plots_writes_both_pngs(tmp_path: Path):
    feats = {f"C{i}": {"cardinality": 100 + i, "coverage": 1.0, "drift": {"psi": 0.01 * i}} for i in range(5)}
    files = render_plots({"features": feats, "settings": {"drift_threshold": 0.2}}, tmp_path)
    assert files == ["cardinality_coverage.png", "drift.png"]
    assert all((tmp_path / f).stat().st_size > 1000 for f in files)

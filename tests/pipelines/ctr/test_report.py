"""The training report and model card show the figures of metrics.json (not the last slice table)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.ctr.report import write_report


def _metrics() -> dict:
    splits = {"validation": {"rows": 400, "auc": 0.7123, "log_loss": 0.4567, "observed_ctr": 0.25,
                             "mean_prediction": 0.26, "ece": 0.0123},
              "test": {"rows": 500, "auc": 0.6987, "log_loss": 0.4711, "observed_ctr": 0.24,
                       "mean_prediction": 0.27, "ece": 0.0211}}
    slices = {"test": {"C1": [{"value": "a", "rows": 300, "ctr": 0.3, "auc": 0.9999},
                              {"value": "b", "rows": 200, "ctr": 0.1, "auc": 0.1111}]}}
    calibration = {"test": [{"predicted": 0.1, "observed": 0.12}, {"predicted": 0.4, "observed": 0.38}]}
    tables = [{"table": "t_C1", "method": "dense", "rows": 10, "dim": 4, "bytes": 160, "fp32_bytes": 160}]
    return {"training": {"mode": "single_process", "workers": 1, "steps": 3, "examples_per_s": 100.0, "peak_rss_mb": 50.0},
            "evaluation": {"splits": splits, "slices": slices, "calibration": calibration, "tables": tables,
                           "embedding_bytes": 160, "embedding_fp32_bytes": 160, "parameters": 1000}}


def _history() -> dict:
    return {"train": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}],
            "validation": [{"step": 2, "auc": 0.7, "log_loss": 0.46}]}


def _card() -> dict:
    return {"model": "dlrm", "config": {"seed": 0}, "data": "vocab/encoded", "rows": {"train": 100},
            "dense": ["I1"], "features": ["C1"], "artifact_bytes": 10}


def _metrics_table(md: str) -> dict[str, dict[str, str]]:
    """The `## Metrics` table of a markdown file: split -> column -> cell."""
    block = md.split("## Metrics", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    head = [c.strip() for c in block[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in block[2:]]
    return {r[0]: dict(zip(head, r)) for r in rows}


def test_model_card_metrics_are_the_split_metrics_of_metrics_json(tmp_path: Path):
    write_report(tmp_path, _metrics(), _history(), _card())
    saved = json.loads((tmp_path / "metrics.json").read_text())["evaluation"]["splits"]
    card = _metrics_table((tmp_path / "model_card.md").read_text())
    assert set(card) == {"validation", "test"}
    for split, m in saved.items():
        for col in ("auc", "log_loss", "ece"):
            assert float(card[split][col]) == round(m[col], 4), (split, col)
    report = _metrics_table((tmp_path / "report.md").read_text())
    assert float(report["test"]["auc"]) == 0.6987 and report["validation"]["rows"] == "400"
    assert "0.9999" not in (tmp_path / "model_card.md").read_text()   # a slice's AUC is no headline
    assert re.search(r"\| a \| 300 \| 0.3000 \| 0.9999 \|", (tmp_path / "report.md").read_text())


def test_validation_panel_has_one_legend_for_both_axes():
    import matplotlib.pyplot as plt

    from pipelines.ctr.report import curves_figure

    fig = curves_figure(_history())
    legend = fig.axes[1].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["AUC (left axis)", "log loss (right axis)"]
    plt.close(fig)

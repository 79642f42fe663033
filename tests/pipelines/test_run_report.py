"""The run report gathers every stage's figures and plots into one markdown file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipelines.run_report import report_stage


def _stage(folder: Path, summary: dict, md: str | None = None, png: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"seconds": 1.5, "rows_in": 10, "rows_out": 9, "summary": summary}))
    if png:
        (folder / png).parent.mkdir(parents=True, exist_ok=True)
        plt.figure(figsize=(1, 1))
        plt.plot([0, 1])
        plt.savefig(folder / png)
        plt.close()
    if md:
        (folder / "quality.md").write_text(md)
    return folder


def test_report_embeds_tables_and_copies_plots(tmp_path):
    a = _stage(tmp_path / "run" / "ingest", {"rows_quarantined": 1})
    b = _stage(tmp_path / "run" / "quality", {"features": 39}, md="# Quality\n\n## Findings\n\n![drift](plots/drift.png)\n", png="plots/drift.png")
    c = _stage(tmp_path / "run" / "train", {"auc": 0.7512, "test": {"recall@20": 0.5, "note": "x"}}, png="curves.png")
    missing = tmp_path / "run" / "rank"
    out = tmp_path / "report"
    out.mkdir()
    res = report_stage({"ingest": a, "quality": b, "rank": missing, "train": c}, out, run_name="r1")
    text = (out / "report.md").read_text()
    assert res == {"report": "report.md", "plots": 2, "stages": 3}
    assert "# sparserec run `r1`" in text and "ingest → quality → train" in text
    assert "| rows_quarantined | 1 |" in text and "| auc | 0.7512 |" in text and "| test.recall@20 | 0.5 |" in text
    assert "![drift](quality-plots-drift.png)" in text and (out / "quality-plots-drift.png").exists()
    assert "![train: curves](train-curves.png)" in text and (out / "train-curves.png").exists()
    assert "### Quality" in text and "#### Findings" in text and "## rank" not in text

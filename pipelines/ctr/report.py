"""Write what a training run produced: `metrics.json`, `report.md`, `model_card.md` and PNG plots
(training curves, calibration).

Example::

    write_report(Path("runs/r/.tmp-train"), metrics, history, card)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def plot_curves(history: dict[str, list], path: Path) -> Path:
    """Training loss by step and validation AUC / log loss by epoch, side by side; with DSL, a third
    panel: weights exchanged per prune/grow update (scheduled and moved) and active weights."""
    fig = curves_figure(history)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_figure(history: dict[str, list]):
    """The figure of `plot_curves`; each panel with two y-axes has one legend naming both series.

    Example:
        >>> fig = curves_figure({"train": [{"step": 1, "loss": 0.6}], "validation": [{"step": 1, "auc": 0.7, "log_loss": 0.5}]})
        >>> [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        ['AUC (left axis)', 'log loss (right axis)']
    """
    dsl = history.get("dsl", [])
    fig, axes = plt.subplots(1, 3 if dsl else 2, figsize=(15 if dsl else 10, 3.5))
    a, b = axes[0], axes[1]
    tr = history.get("train", [])
    a.plot([r["step"] for r in tr], [r["loss"] for r in tr], color="tab:blue")
    a.set_xlabel("step"), a.set_ylabel("training log loss"), a.set_title("training")
    va = history.get("validation", [])
    b.plot([r["step"] for r in va], [r["auc"] for r in va], marker="o", color="tab:green", label="AUC")
    b.set_xlabel("step"), b.set_ylabel("validation AUC"), b.set_title("validation")
    b2 = b.twinx()
    b2.plot([r["step"] for r in va], [r["log_loss"] for r in va], marker="s", color="tab:red", label="log loss")
    b2.set_ylabel("validation log loss")
    b.yaxis.label.set_color("tab:green"), b2.yaxis.label.set_color("tab:red")
    b.legend([*b.get_lines(), *b2.get_lines()], ["AUC (left axis)", "log loss (right axis)"], fontsize=7, loc="best")
    if dsl:
        c = axes[2]
        steps = [r["step"] for r in dsl]
        c.plot(steps, [r["scheduled"] for r in dsl], ls="--", color="grey", label="scheduled")
        c.plot(steps, [r["exchanged"] for r in dsl], marker=".", color="tab:purple", label="exchanged")
        c.set_xlabel("step"), c.set_ylabel("weights per update"), c.set_title(f"DSL prune/grow (budget {dsl[-1]['budget']:,})")
        c2 = c.twinx()
        c2.plot(steps, [r["active"] / max(r["budget"], 1) for r in dsl], color="tab:orange", label="active / budget")
        c2.set_ylabel("active / budget"), c2.set_ylim(0, 1.05)
        c.legend([*c.get_lines(), *c2.get_lines()], ["scheduled", "exchanged", "active / budget (right axis)"],
                 fontsize=7, loc="center left")
    fig.tight_layout()
    return fig


def plot_calibration(bins: list[dict[str, float]], path: Path, title: str) -> Path:
    """Observed vs. predicted CTR per bin, with the diagonal."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pred = [b["predicted"] for b in bins]
    obs = [b["observed"] for b in bins]
    hi = max(pred + obs + [0.01]) * 1.05
    ax.plot([0, hi], [0, hi], "--", color="grey")
    ax.plot(pred, obs, marker="o")
    ax.set_xlabel("predicted CTR"), ax.set_ylabel("observed CTR"), ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def write_report(out: Path, metrics: dict[str, Any], history: dict[str, list], card: dict[str, Any]) -> dict[str, Path]:
    """Write metrics.json, report.md (+ PNGs) and model_card.md into `out`; return their paths."""
    out = Path(out)
    paths = {"metrics": out / "metrics.json", "report": out / "report.md", "card": out / "model_card.md",
             "curves": plot_curves(history, out / "training_curves.png")}
    paths["metrics"].write_text(json.dumps({**metrics, "history": history}, indent=2, sort_keys=True, default=str) + "\n")
    lines = [f"# Training report: {card['model']}", "", f"Mode: {metrics['training']['mode']} "
             f"({metrics['training']['workers']} worker(s)), {metrics['training']['steps']} steps, "
             f"{metrics['training']['examples_per_s']:.0f} examples/s, peak RSS {metrics['training']['peak_rss_mb']:.0f} MB.", "",
             "## Metrics", ""]
    split_rows = [{"split": s, **m} for s, m in metrics["evaluation"]["splits"].items()]
    lines += _table(split_rows, ["split", "rows", "auc", "log_loss", "observed_ctr", "mean_prediction", "ece"])
    lines += ["", "![training curves](training_curves.png)", "", "## Calibration", ""]
    for s, bins in metrics["evaluation"]["calibration"].items():
        name = f"calibration_{s}.png"
        paths[name] = plot_calibration(bins, out / name, f"calibration ({s})")
        lines += [f"![calibration {s}]({name})", ""]
    lines += ["## AUC by slice (most frequent ids of the top features)", ""]
    for s, feats in metrics["evaluation"]["slices"].items():
        for f, slice_rows in feats.items():
            lines += [f"**{s} / {f}**", ""] + _table(slice_rows, ["value", "rows", "ctr", "auc"]) + [""]
    lines += ["## Embedding tables", ""] + _table(metrics["evaluation"]["tables"], ["table", "method", "rows", "dim", "bytes", "fp32_bytes"])
    paths["report"].write_text("\n".join(lines) + "\n")
    card_lines = [f"# Model card: {card['model']}", "", "## Model", "", "```json", json.dumps(card["config"], indent=2), "```", "",
                  "## Data", "", f"- encoded data: `{card['data']}`", f"- rows per split: {card['rows']}",
                  f"- dense features: {', '.join(card['dense']) or '(none)'}", f"- categorical features: {', '.join(card['features'])}", "",
                  "## Metrics", ""] + _table(split_rows, ["split", "auc", "log_loss", "ece"]) + [
                  "", "## Size", "", f"- embedding bytes: {metrics['evaluation']['embedding_bytes']:,} "
                  f"(fp32 equivalent {metrics['evaluation']['embedding_fp32_bytes']:,})",
                  f"- parameters: {metrics['evaluation']['parameters']:,}",
                  f"- exported artifact bytes: {card.get('artifact_bytes', 'n/a')}", "",
                  "## Limits", "", "Trained and evaluated offline on a time-ordered split; calibration and slice AUCs "
                  "are in report.md."]
    paths["card"].write_text("\n".join(card_lines) + "\n")
    return paths

"""Finished CTR runs side by side: one row per run, and AUC against embedding bytes in one plot.

Reads only what the stages wrote: `*/manifest.json` (seconds per stage, the raw input),
`plan/embedding_plan.json` (bytes, method per table), `train/metrics.json` (AUC, log loss, ECE per
split, examples/s, peak RSS), `train/model_card.md` (the DSL settings the run trained with) and
`vocab/schema.json` (rows per split). A missing file leaves its cells empty.

Example::

    rows = compare_runs([Path("runs/dense"), Path("runs/int4")])
    print(markdown_table(rows))
    plot_auc_vs_bytes(rows, Path("out/auc_vs_bytes.png"))
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

COLUMNS = ["run", "data", "rows", "plan_bytes", "fp32_bytes", "methods", "dsl", "val_auc", "test_auc", "test_log_loss",
           "test_ece", "examples_per_s", "peak_rss_mb", "stage_seconds"]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dsl(run: Path, plan: dict[str, Any]) -> str:
    """`off`, or `<mode> @ <density>` from the training config in the model card (plan densities as fallback)."""
    card = (run / "train" / "model_card.md")
    if card.exists():
        m = re.search(r"```json\n(.*?)\n```", card.read_text(), re.S)
        cfg = _json_text(m.group(1)) if m else {}
        dsl = cfg.get("embeddings", {}).get("dsl", {})
        if dsl:
            return f"{dsl.get('mode', 'exact')} @ {dsl.get('density')}" if dsl.get("enabled") else "off"
    dens = sorted({t["dsl_density"] for t in plan.get("tables", []) if t.get("dsl_density") is not None})
    return f"on @ {', '.join(map(str, dens))}" if dens else "off"


def _json_text(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def manifests(run: Path) -> dict[str, dict[str, Any]]:
    """Stage name -> its manifest, in the order the stages ran."""
    found = [_json(p) for p in sorted(Path(run).glob("*/manifest.json"))] if Path(run).is_dir() else []
    return {m["stage"]: m for m in sorted((m for m in found if "stage" in m), key=lambda m: m.get("started_at", ""))}


def run_row(run: Path) -> dict[str, Any]:
    """One run's figures (see `COLUMNS`); absent figures are None."""
    run = Path(run)
    ms = manifests(run)
    raw = ms.get("ingest", {}).get("inputs", {}).get("raw", {}).get("path")
    schema = _json(run / "vocab" / "schema.json")
    plan = _json(run / "plan" / "embedding_plan.json")
    metrics = _json(run / "train" / "metrics.json")
    splits = metrics.get("evaluation", {}).get("splits", {})
    training = metrics.get("training", {})
    methods = ", ".join(f"{'+'.join(t['features'])} {t['method']}" for t in plan.get("tables", []))
    return {"run": run.name, "path": str(run), "data": Path(raw).name if raw else None,
            "rows": sum(schema.get("rows", {}).values()) or None,
            "plan_bytes": plan.get("total_bytes"), "fp32_bytes": plan.get("fp32_bytes"), "methods": methods or None,
            "dsl": _dsl(run, plan) if plan or metrics else None,
            "val_auc": splits.get("validation", {}).get("auc"), "test_auc": splits.get("test", {}).get("auc"),
            "test_log_loss": splits.get("test", {}).get("log_loss"), "test_ece": splits.get("test", {}).get("ece"),
            "examples_per_s": training.get("examples_per_s"), "peak_rss_mb": training.get("peak_rss_mb"),
            "stage_seconds": {k: round(float(m.get("seconds", 0.0)), 1) for k, m in ms.items()}}


def compare_runs(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per run folder, in the order given."""
    return [run_row(Path(r)) for r in runs]


def format_cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return " ".join(f"{k} {s:g}s" for k, s in v.items())
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> str:
    """The comparison as a markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def draw_auc_vs_bytes(rows: list[dict[str, Any]], ax) -> None:
    """Test AUC (validation when no test) against plan bytes on `ax`, one labelled point per run."""
    for r in rows:
        auc = r.get("test_auc") if r.get("test_auc") is not None else r.get("val_auc")
        if auc is None or r.get("plan_bytes") is None:
            continue
        ax.scatter([r["plan_bytes"]], [auc])
        ax.annotate(r["run"], (r["plan_bytes"], auc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (plan)"), ax.set_ylabel("test AUC"), ax.set_title("AUC vs embedding bytes")


def plot_auc_vs_bytes(rows: list[dict[str, Any]], path: Path) -> Path:
    """`draw_auc_vs_bytes` saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_auc_vs_bytes(rows, ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_comparison(runs: list[Path], out: Path) -> dict[str, Path]:
    """`compare.md`, `compare.json` and `auc_vs_bytes.png` in `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = compare_runs(runs)
    paths = {"table": out / "compare.md", "json": out / "compare.json", "plot": out / "auc_vs_bytes.png"}
    paths["table"].write_text("# Runs compared\n\n" + markdown_table(rows) + "\n![AUC vs embedding bytes](auc_vs_bytes.png)\n")
    paths["json"].write_text(json.dumps(rows, indent=2, default=str) + "\n")
    plot_auc_vs_bytes(rows, paths["plot"])
    return paths

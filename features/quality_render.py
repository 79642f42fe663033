"""The readable side of the quality report: `quality.md` and its matplotlib plots, from quality.json's dict.

Example::

    plots = render_plots(report, Path("out"))
    Path("out/quality.md").write_text(render_markdown(report, plots, "ctr"))
"""

from __future__ import annotations

from pathlib import Path


def place_labels(ax, names: list[str], xs: list[float], ys: list[float], fontsize: int = 7) -> list:
    """Label each point without two labels overlapping: a label that would cover an earlier one moves
    up or down (a thin line then points at its dot). Call after the layout is final; returns the
    labels' boxes in display pixels.

    Example::

        boxes = place_labels(ax, ["C1", "C2"], [10, 11], [1.0, 1.0])
    """
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    placed = [ax.title.get_window_extent(renderer)]
    steps = [0] + [s * k for k in range(1, 30) for s in (1, -1)]  # 0, +1, -1, +2, -2 ... lines
    for name, x, y in sorted(zip(names, xs, ys), key=lambda t: (-t[2], t[1])):
        for k in steps:
            dy = 2 + k * (fontsize + 2)
            ann = ax.annotate(name, (x, y), fontsize=fontsize, xytext=(3, dy), textcoords="offset points",
                              annotation_clip=False,
                              arrowprops=dict(arrowstyle="-", lw=0.4, color="grey") if k else None)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the words only, not the leader line
            if not any(box.padded(1).overlaps(p) for p in placed) or k == steps[-1]:
                break
            ann.remove()
        placed.append(box)
    return placed[1:]


def render_plots(report: dict, out: Path) -> list[str]:
    """Cardinality vs. coverage (log x) and drift (PSI) per feature; returns the PNG file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = report["features"]
    names = list(fs)
    files = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [max(fs[c]["cardinality"], 1) for c in names]
    ys = [fs[c]["coverage"] for c in names]
    ax.scatter(xs, ys, s=18)
    ax.set_xscale("log")
    ax.set_xlabel("distinct values (exact, log scale)")
    ax.set_ylabel("coverage (non-missing share)")
    ax.set_title("Cardinality vs. coverage")
    fig.tight_layout()
    place_labels(ax, names, xs, ys)
    fig.savefig(out / "cardinality_coverage.png", dpi=100)
    plt.close(fig)
    files.append("cardinality_coverage.png")

    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
    vals = [fs[c]["drift"]["psi"] for c in names]
    threshold = report["settings"]["drift_threshold"]
    ax.bar(range(len(names)), vals, color=["tab:red" if v > threshold else "tab:blue" for v in vals])
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("PSI (train vs. test period)")
    ax.set_title("Drift per feature")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=100)
    plt.close(fig)
    files.append("drift.png")
    return files


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def render_markdown(report: dict, plots: list[str], name: str) -> str:
    """A one-page summary: findings first, then a table with one row per feature."""
    fs = report["features"]
    p = report["periods"]
    lines = [f"# Data quality: {name}", "",
             f"{report['rows']:,} rows; drift compares the train period ({p['train_rows']:,} rows) with the "
             f"test period ({p['test_rows']:,} rows, split by {p['method']}).", "",
             "## Findings", "",
             f"- constant features: {', '.join(report['constant']) or 'none'}",
             f"- possible label leakage: {', '.join(report['leakage']) or 'none'}",
             f"- drifting features (PSI > {report['settings']['drift_threshold']}): {', '.join(report['drift']) or 'none'}",
             ""]
    has_label = report.get("label") is not None
    head = "| feature | role | distinct | HLL | coverage | once | <10 | <100 | top value (share) | PSI |"
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"
    if has_label:
        head += " leak lift | NMI |"
        sep += "---:|---:|"
    lines += ["## Features", "", head, sep]
    for c, f in fs.items():
        top = f["top_values"][0] if f["top_values"] else None
        top_txt = f"`{top['value']}` ({_pct(top['share'])})" if top else ""
        row = (f"| {c} | {f['role']} | {f['cardinality']:,} | {f['cardinality_hll']:,} | {_pct(f['coverage'])} | "
               f"{f['values_once']:,} | {f['values_lt10']:,} | {f['values_lt100']:,} | {top_txt} | {f['drift']['psi']:.3f} |")
        if has_label:
            lk = f["leakage"]
            lift = "" if lk["lift"] is None else f"{lk['lift']:.3f}"
            nmi = "" if lk["nmi"] is None else f"{lk['nmi']:.3f}"
            row += f" {lift} | {nmi} |"
        lines.append(row)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)

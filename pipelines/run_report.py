"""The run's `report.md`: every stage's figures and plots in one readable file, PNGs beside it.

It reads only what the stages wrote (manifests, their markdown and PNG files), so it can be rebuilt
at any time and read without running anything.

Example::

    report_stage({"ingest": Path("runs/r/ingest"), "train": Path("runs/r/train")}, Path("/tmp/out"), run_name="r")
    # -> {'report': 'report.md', 'plots': 7, 'stages': 2}
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable, Mapping

_MD_NAMES = ("report.md", "quality.md", "plan.md", "model_card.md", "ranking.md", "summary.md")
_IMG = re.compile(r"!\[([^\]]*)\]\(([^)]+\.png)\)")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _stage_section(name: str, folder: Path, out: Path, units: tuple[str, str] = ("rows", "rows")) -> tuple[list[str], int]:
    lines = [f"## {name}", ""]
    m = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    facts = {"seconds": m.get("seconds"), f"{units[0]} in": m.get("rows_in"), f"{units[1]} out": m.get("rows_out")}
    for k, v in (m.get("summary") or {}).items():
        if isinstance(v, dict):  # one level of nesting, e.g. {"test": {"recall@20": 0.53}} -> test.recall@20
            facts.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
        elif isinstance(v, (int, float, str)) and len(str(v)) < 80:
            facts[k] = v
    facts = {k: v for k, v in facts.items() if v is not None}
    if facts:
        lines += ["| figure | value |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in facts.items()], ""]
    plots = 0
    copied: dict[str, str] = {}
    for png in sorted(folder.rglob("*.png")):
        target = f"{name}-{png.relative_to(folder).as_posix().replace('/', '-')}"
        shutil.copyfile(png, out / target)
        copied[png.relative_to(folder).as_posix()] = target
        plots += 1
    embedded: set[str] = set()
    for md_name in _MD_NAMES:
        md = folder / md_name
        if not md.exists():
            continue
        text = md.read_text()
        text = re.sub(r"^(#{1,4}) ", lambda h: "#" * (len(h.group(1)) + 2) + " ", text, flags=re.M)  # nest under the stage

        def relink(match: re.Match) -> str:
            rel = match.group(2)
            embedded.add(rel)
            return f"![{match.group(1)}]({copied.get(rel, rel)})"

        lines += [_IMG.sub(relink, text).rstrip(), ""]
    for rel, target in copied.items():
        if rel not in embedded:
            lines += [f"![{name}: {Path(rel).stem}]({target})", ""]
    return lines, plots


def report_stage(inputs: Mapping[str, Path], out: Path, run_name: str = "run",
                 count_units: Mapping[str, tuple[str, str]] | None = None,
                 stale: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None) -> dict:
    """Write `out/report.md` from the stage folders in `inputs` (in order), copying their PNGs beside it.

    `count_units`: what a stage's rows_in / rows_out count when not rows, e.g. {"plan": ("features", "tables")}.
    `stale`: stages whose output was made from older inputs (stage -> why), or a function giving them
    when the report is written: their figures are left out and listed as stale instead.
    """
    stale = dict((stale() if callable(stale) else stale) or {})
    lines = [f"# sparserec run `{run_name}`", ""]
    total_seconds = 0.0
    order = []
    for name, folder in inputs.items():
        if (folder / "manifest.json").exists() and name not in stale:
            total_seconds += json.loads((folder / "manifest.json").read_text()).get("seconds", 0.0)
            order.append(name)
    lines += [f"Stages: {' → '.join(order)}; {total_seconds:.0f} s of stage time in all.", ""]
    left_out = [f"{n} ({stale[n]})" for n in inputs if n in stale]
    if left_out:
        lines += [f"**Not included, stale** (made from older inputs; re-run to refresh): {', '.join(left_out)}.", ""]
    plots = 0
    for name in order:
        section, n = _stage_section(name, Path(inputs[name]), out, (count_units or {}).get(name, ("rows", "rows")))
        lines += section
        plots += n
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"report": "report.md", "plots": plots, "stages": len(order), **({"stale": sorted(stale)} if left_out else {})}

"""The layers of DESIGN.md, checked on the source: no arrow of the import graph runs up the layers
(features → embeddings → models → pipelines → jobs), so no import circle spans two packages; `features`
never imports torch; `embeddings` and `models` never import Ray or Spark. Circles inside one package are
`tests/test_import_cycles.py`'s.

Every import counts, at the top of a module or inside a function: an import moved into a function still
makes the lower module need the higher one.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("features", "embeddings", "models", "pipelines", "jobs")          # lowest first
FORBIDDEN = {"features": ("torch", "torchrec", "fbgemm_gpu"),
             "embeddings": ("ray", "pyspark"), "models": ("ray", "pyspark")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in LAYERS for p in sorted((ROOT / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _imported(path: Path, name: str) -> set[str]:
    """Dotted names `path` imports (a `from a import b` gives `a.b` as well as `a`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    """module → the project modules it imports (the longest known prefix of each imported name)."""
    mods = _sources()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imp in _imported(path, name):
            parts = imp.split(".")
            hit = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods), None)
            if hit is not None and hit != name:
                targets.add(hit)
        edges[name] = targets
    return edges


def test_the_graph_sees_imports_inside_functions():
    edges = graph()
    assert "pipelines.ctr.model" in edges and "models.dlrm" in edges["pipelines.ctr.model"]   # imported in a function
    assert "pipelines.runtime.failure" in edges["pipelines.ctr.loop"]


def test_no_arrow_runs_up_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if rank[b.split(".")[0]] > rank[a.split(".")[0]])
    assert upward == []


def test_lower_layers_do_not_import_the_engines_above_them():
    bad = []
    for name, path in _sources().items():
        banned = FORBIDDEN.get(name.split(".")[0], ())
        bad += [f"{name} imports {imp}" for imp in sorted(_imported(path, name)) if imp.split(".")[0] in banned]
    assert bad == []

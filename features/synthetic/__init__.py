"""Generators of realistic raw logs with their ground truth (`truth.json`) written beside them.

Example:
    >>> import tempfile
    >>> from features.synthetic import generate
    >>> truth = generate("ctr", rows=100, seed=0, output=tempfile.mkdtemp())
    >>> truth["kind"], truth["file"], truth["rows"]
    ('ctr', 'train.tsv', 100)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.errors import UserError

from .ctr import generate_ctr
from .interactions import generate_interactions
from .sessions import generate_sessions

GENERATORS = {"ctr": generate_ctr, "sessions": generate_sessions, "interactions": generate_interactions}


def generate(kind: str, rows: int, seed: int, output: str | Path, gzip: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Write a generated dataset of `kind` into `output`; return its ground truth."""
    if kind not in GENERATORS:
        raise UserError(f"unknown dataset kind '{kind}'; choose one of {', '.join(GENERATORS)}.")
    if rows < 100:
        raise UserError(f"--rows {rows} is too small to plant the dataset's properties; use at least 100.")
    return GENERATORS[kind](rows=rows, seed=seed, output=Path(output), gzip=gzip, **kwargs)

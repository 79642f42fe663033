"""A finished run's stage files, read with a one-line error naming the stage that writes them.

Example (a train stage's model folder; without `model.pt` the call is a one-line `EncodedDataError`):
    >>> import tempfile
    >>> model = Path(tempfile.mkdtemp())
    >>> _ = (model / "model.json").write_text('{"dense_in": 4}'), (model / "model.pt").write_bytes(b"")
    >>> stage_json(model, "model.json", also=("model.pt",), stage="train")["dense_in"]
    4
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.runtime.errors import EncodedDataError


def stage_json(folder: Path, name: str, also: tuple[str, ...], stage: str) -> dict[str, Any]:
    """`folder/name` parsed as JSON, once it and `folder/<also>` are there; else an `EncodedDataError`
    saying which are missing and that the run's `stage` stage must finish first."""
    folder = Path(folder)
    missing = [n for n in (name, *also) if not (folder / n).exists()]
    if missing:
        raise EncodedDataError(f"{folder}: no {' / '.join(missing)} there; give a run whose '{stage}' stage "
                               "finished (--run RUN_DIR)")
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError) as err:
        raise EncodedDataError(f"{folder / name}: cannot be read ({err}); re-run the run's '{stage}' stage") from None

"""User-item implicit feedback with timestamps and power-law user and item degrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .common import write_table, write_truth, zipf_sample

USER_EXPONENT = 1.0
ITEM_EXPONENT = 1.1
DAYS = 90


def generate_interactions(rows: int, seed: int, output: Path, gzip: bool = False) -> dict[str, Any]:
    """Write `interactions.csv` (user_id, item_id, timestamp) and `truth.json` into `output`.

    Example:
        >>> import tempfile
        >>> truth = generate_interactions(1_000, seed=0, output=Path(tempfile.mkdtemp()))
        >>> truth["user_exponent"]
        1.0
    """
    rng = np.random.default_rng(seed)
    n_users = max(50, rows // 20)
    n_items = max(50, rows // 30)
    user_perm = rng.permutation(n_users)
    item_perm = rng.permutation(n_items)
    users = user_perm[zipf_sample(rng, n_users, rows, USER_EXPONENT)] + 1
    items = item_perm[zipf_sample(rng, n_items, rows, ITEM_EXPONENT)] + 1
    start = 1_690_000_000
    ts = np.sort(rng.integers(start, start + DAYS * 86_400, size=rows))
    df = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": ts})
    path = write_table(df, output / "interactions.csv", ",", gzip)
    truth = {"kind": "interactions", "rows": rows, "seed": seed, "file": path.name,
             "n_users": n_users, "n_items": n_items, "user_exponent": USER_EXPONENT,
             "item_exponent": ITEM_EXPONENT,
             "roles": {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp"}}
    write_truth(output, truth)
    return truth

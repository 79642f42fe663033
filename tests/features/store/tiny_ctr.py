"""Data of the tiny CTR store that tests/features/store/conftest.py builds once (ingest -> aggregates -> vocab -> Feast).

Times (T = 1.7e9): user u1 has events at T, T+1h, T+2d and T+9d; u2 one at T+2d; u3 one at T+12h;
one event has no user. Items i1, i2, i3. The store is materialized up to just after T+9d.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.config import ColumnRoles, DatasetConfig

ROOT_DIR = Path(__file__).resolve().parents[3]
T = 1_700_000_000
H, D = 3600, 86_400
TTL_DAYS = 5
EVENTS = [  # label, ts, I1, C1, user (C10), item (C11)
    (1, T, 3.0, "a", "u1", "i1"),
    (0, T + H, 1.0, "b", "u1", "i2"),
    (1, T + 12 * H, 7.0, "a", "u3", "i3"),
    (1, T + 2 * D, None, "a", "u1", "i1"),
    (0, T + 2 * D, 5.0, None, "u2", "i1"),
    (1, T + 3 * D, 2.0, "c", None, "i2"),
    (0, T + 9 * D, 0.0, "a", "u1", "i1"),
]
VOCAB = {"min_count": 1, "validation_share": 0.45, "test_share": 0.2}   # cuts at T+12h and T+3d


def ctr_dataset() -> DatasetConfig:
    return DatasetConfig(path="/nonexistent", kind="ctr", name="tiny-ctr",
                         roles=ColumnRoles(label="label", timestamp="ts", dense=["I1"], categorical=["C1", "C10", "C11"],
                                           user_id="C10", item_id="C11"))


def write_ingest(spark, rows, columns, schema: str, folder: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    spark.createDataFrame(df.astype(object).where(df.notna(), None), schema).write.parquet(str(folder / "data"))
    return df

"""Small builders shared by the feature-stage tests: dataset configs of the generated data, tiny ingest folders."""

from __future__ import annotations

from pathlib import Path

from features.config import ColumnRoles, DatasetConfig, ItemTableConfig


def ctr_dataset(path: Path, truth: dict) -> DatasetConfig:
    """The generated ctr data as a dataset config."""
    return DatasetConfig(name="ctr", path=path, format="tsv", kind="ctr",
                         roles=ColumnRoles(label="label", timestamp="ts", dense=truth["dense"],
                                           categorical=truth["categorical"]))


def sessions_dataset(path: Path, items: Path) -> DatasetConfig:
    """The generated session data (with its item table) as a dataset config."""
    return DatasetConfig(name="sessions", path=path, format="csv", kind="sessions",
                         roles=ColumnRoles(session_id="session_id", user_id="user_id", timestamp="timestamp",
                                           item_id="item_id"),
                         items=ItemTableConfig(path=items, categorical=["category", "subcategory", "brand", "price_bucket"],
                                               multi_valued=["tokens"]))


def write_ingest_folder(spark, rows: list[dict], schema: str, out: Path, items: list[dict] | None = None,
                        items_schema: str | None = None) -> Path:
    """A hand-made ingest output (`data/`, optional `items/`) for stage tests that need exact inputs."""
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("overwrite").parquet(str(out / "data"))
    if items is not None:
        spark.createDataFrame(items, items_schema).coalesce(1).write.mode("overwrite").parquet(str(out / "items"))
    return out

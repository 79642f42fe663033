"""Dataset declarations and feature-stage settings (pydantic models, unknown keys rejected).

A dataset is declared in YAML; no column name is hard-coded in library code.

Example:
    >>> ds = DatasetConfig(path="data/sample/ctr/train.tsv.gz", format="tsv", kind="ctr",
    ...                    roles=ColumnRoles(label="label", dense=["I1"], categorical=["C1"]))
    >>> ds.roles.label
    'label'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def clean_path(p: Path | str) -> Path:
    """`~` expanded; an absolute path resolved once (no `..` segments left), a relative one normalized
    (the run config later resolves it from the config file's folder).

    Example:
        >>> str(clean_path("/x/y/../data/file.csv"))
        '/x/data/file.csv'
    """
    p = Path(os.path.expanduser(str(p)))
    return p.resolve() if p.is_absolute() else Path(os.path.normpath(p))


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DatasetKind = Literal["ctr", "sessions", "interactions"]
FileFormat = Literal["csv", "tsv", "parquet"]


class ColumnRoles(StrictModel):
    """Which column plays which role. Only the roles that the dataset kind needs are required."""

    label: str | None = None
    dense: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    multi_valued: list[str] = Field(default_factory=list, description="columns holding several ids separated by `separator`")
    separator: str = " "
    label_threshold: float | None = Field(default=None, description="label column holds a number; label = 1 when value >= this (e.g. rating >= 4)")
    label_positive: str | float | list[str | float] | None = Field(
        default=None, description="the label value(s) that mean 1, e.g. '>50K' or [yes, y] (or numbers: [4, 5]); "
        "every other value is 0. Instead of label_threshold")
    session_id: str | None = None
    user_id: str | None = None
    item_id: str | None = None
    timestamp: str | None = None

    @model_validator(mode="after")
    def _one_label_rule(self) -> "ColumnRoles":
        if self.label_positive is not None and self.label_threshold is not None:
            raise ValueError("give roles.label_positive or roles.label_threshold, not both")
        if isinstance(self.label_positive, list) and not self.label_positive:
            raise ValueError("roles.label_positive is empty; list the label value(s) that mean 1")
        return self

    def positive_values(self) -> list[str | float] | None:
        """`label_positive` as a list (None when not set)."""
        p = self.label_positive
        return None if p is None else (list(p) if isinstance(p, list) else [p])


class ItemTableConfig(StrictModel):
    """The item-metadata table of a `sessions` / `interactions` dataset."""

    path: Path
    format: FileFormat = "csv"
    delimiter: str | None = Field(default=None, description="field separator; default: tab for tsv, comma for csv")
    header: bool = True
    item_id: str = "item_id"
    categorical: list[str] = Field(default_factory=list)
    multi_valued: list[str] = Field(default_factory=list)
    separator: str = " "

    _clean_path = field_validator("path")(classmethod(lambda cls, v: clean_path(v)))


class SideTableConfig(StrictModel):
    """A side table joined to every row of the main file on a key in the ingest stage (e.g. a user table).

    Its columns join the main file's; name them in `dataset.roles` like any other column. Its bad
    rows and repeated keys go to `quarantine_<name>/`; rows whose key has no match keep null attributes
    and are counted (`tables.<name>.unmatched_rows`).

    Example:
        >>> t = SideTableConfig(name="users", path="u.user", delimiter="|", key="user")
        >>> t.on or t.key
        'user'
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="names quarantine_<name>/ and the summary entry")
    path: Path
    format: FileFormat = "csv"
    delimiter: str | None = Field(default=None, description="field separator; default: tab for tsv, comma for csv")
    header: bool = True
    columns: list[str] | None = Field(default=None, description="column names when the file has no header")
    key: str = Field(description="the key column of this table (one row per key)")
    on: str | None = Field(default=None, description="the main file's column that holds the key; default: `key`")
    flags: dict[str, list[str]] = Field(
        default_factory=dict, description="multi-valued columns built from 0/1 flag columns: new column -> flag "
        "columns; a row's value lists the names of its flags that are set (e.g. genres: [Action, Comedy, ...])")

    _clean_path = field_validator("path")(classmethod(lambda cls, v: clean_path(v)))

    @model_validator(mode="after")
    def _columns_when_headerless(self) -> "SideTableConfig":
        if not self.header and not self.columns:
            raise ValueError(f"table '{self.name}': header is false, so 'columns' must list the column names in file order")
        return self


class DatasetConfig(StrictModel):
    """A raw dataset: where it is, how it is written, and the role of each column."""

    name: str = "dataset"
    path: Path
    format: FileFormat = "tsv"
    delimiter: str | None = Field(default=None, description="field separator; default: tab for tsv, comma for csv (e.g. '|')")
    kind: DatasetKind
    header: bool = True
    columns: list[str] | None = Field(default=None, description="column names when the file has no header")
    roles: ColumnRoles = Field(default_factory=ColumnRoles)
    items: ItemTableConfig | None = None
    tables: list[SideTableConfig] = Field(default_factory=list, description="side tables joined on a key in ingest")

    _clean_path = field_validator("path")(classmethod(lambda cls, v: clean_path(v)))

    @model_validator(mode="after")
    def _roles_fit_kind(self) -> "DatasetConfig":
        r = self.roles
        need: dict[str, list[str]] = {
            "ctr": ["label"],
            "sessions": ["item_id", "timestamp"],
            "interactions": ["user_id", "item_id", "timestamp"],
        }
        missing = [k for k in need[self.kind] if getattr(r, k) is None]
        if missing:
            raise ValueError(f"a '{self.kind}' dataset needs roles.{missing[0]} (the column name that holds it)")
        if not self.header and not self.columns:
            raise ValueError("header is false, so 'columns' must list the column names in file order")
        names = [t.name for t in self.tables]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"two side tables are named '{dup}'; give each table its own name")
        return self


class SparkConfig(StrictModel):
    """How to start Spark. `master` is any Spark master URL; local by default."""

    master: str = "local[*]"
    app_name: str = "sparserec"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(default=8, ge=1)
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings; a local master's JVM "
                                 "gets features.spark.LOCAL_JAVA_OPTIONS unless spark.driver.extraJavaOptions is set here")
    class_archive: str | None = Field(default=None, description="local masters: a folder for a JVM class-data archive "
                                      "that halves later Spark starts (features/class_archive.py); e.g. ~/.cache/sparserec/jvm")


class IngestConfig(StrictModel):
    max_quarantine_share: float = Field(default=0.01, ge=0.0, le=1.0)
    partitions: int = Field(default=4, ge=1)


class VocabConfig(StrictModel):
    min_count: int = Field(default=2, ge=1)
    max_size: int | None = Field(default=None, ge=1)
    validation_share: float = Field(default=0.1, ge=0.0, lt=1.0, description="the time period before the test period")
    test_share: float = Field(default=0.1, ge=0.0, lt=1.0, description="latest share of rows (by timestamp)")
    split: Literal["time", "random"] | None = Field(
        default=None, description="time: periods by roles.timestamp; random: each row drawn with split_seed; "
        "default time when there is a timestamp role, else random. Never depends on the label")
    split_seed: int | None = Field(default=None, description="seed of the random split and of the encoded files' "
                                   "row order; default the run's seed")
    split_key: list[str] = Field(default_factory=list, description="random split: rows with equal values in these "
                                 "columns land in the same split (e.g. [user_id]); empty: each row is drawn on its own")
    numeric_buckets: int = Field(default=0, ge=0, le=1024, description="ctr: also embed each dense column as "
                                 "quantile buckets of the train split (an int64 column <col>__bucket, 0 = missing); "
                                 "0: off")


def resolve_split(dataset: "DatasetConfig", vocab: VocabConfig) -> str:
    """The split method for this dataset (`time` or `random`); a `ConfigError` when the settings do not fit it.

    Example:
        >>> ds = DatasetConfig(path="a.csv", kind="ctr", roles=ColumnRoles(label="y"))
        >>> resolve_split(ds, VocabConfig())
        'random'
    """
    from features.errors import ConfigError

    r = dataset.roles
    method = vocab.split or ("time" if r.timestamp else "random")
    if method == "time" and r.timestamp is None:
        raise ConfigError("features.vocab.split is 'time' but dataset.roles.timestamp is not set; "
                          "name the timestamp column or use split: random.")
    if vocab.split_key:
        if method != "random":
            raise ConfigError("features.vocab.split_key applies to split: random only; remove it or set split: random.")
        if r.label in vocab.split_key:
            raise ConfigError(f"features.vocab.split_key lists the label '{r.label}'; a split must not depend on "
                              "the label, remove it.")
        unknown = [c for c in vocab.split_key if dataset.columns and c not in dataset.columns]
        if unknown:
            raise ConfigError(f"features.vocab.split_key column '{unknown[0]}' is not in dataset.columns; fix the name.")
    return method


class SessionsConfig(StrictModel):
    gap_minutes: float = Field(default=30.0, gt=0)
    min_length: int = Field(default=2, ge=1)
    max_length: int = Field(default=50, ge=2)
    validation_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_share: float = Field(default=0.1, ge=0.0, lt=1.0)


class QualityConfig(StrictModel):
    top_values: int = Field(default=5, ge=1)
    leakage_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    test_share: float = Field(default=0.2, gt=0.0, lt=1.0, description="latest share of rows used as the test period for drift")
    drift_buckets: int = Field(default=20, ge=1, description="top train values compared for drift; the rest is one 'other' bucket")
    drift_threshold: float = Field(default=0.2, gt=0.0, description="population stability index above which a feature is flagged as drifting")


class RankConfig(StrictModel):
    """OutRank-style feature ranking (features/outrank.py); estimators are named in features/estimators.py."""

    heuristic: str = Field(default="mi-permutation", description="mi | mi-shifted | mi-permutation (exact names)")
    permutations: int = Field(default=8, ge=1, description="mi-shifted: seeded random label copies averaged (OutRank uses 1)")
    seed: int = Field(default=0, description="seed of the mi-shifted label copies")
    bins: int = Field(default=16, ge=2, description="quantile bins for dense columns")
    pairs_top_k: int = Field(default=10, ge=0, description="top features by score that enter the pair search (0: no pairs)")
    pair_max_cardinality: int = Field(default=16, ge=0, description="categorical features with at most this many values also enter it")
    pair_buckets: int = Field(default=1 << 20, ge=2, description="a feature pair is hashed into this many buckets, like a crossed embedding")
    pair_sample_rows: int | None = Field(
        default=1_000_000, ge=1,
        description="pairs are counted on a seeded sample of at most this many rows when the data has more "
                    "(the pair table, pairs x rows, would dwarf the data); null: every row (exact)")
    pair_min_rows: int = Field(
        default=50_000, ge=1,
        description="when the pairs and their members outnumber the features, pairs are counted on a sample of "
                    "rows x features / (pairs + members) rows (no larger than the feature pass), but never on "
                    "fewer than this many rows (all rows up to it)")
    select_k: int | None = Field(default=None, ge=1)
    relevance_weight: float = 1.0
    redundancy_weight: float = 1.0
    pair_weight: float = 0.5
    min_score: float = Field(default=0.001, description="3MR score (nats) a feature needs to be selected")
    plot_top: int = Field(default=20, ge=1, description="features shown in top_features.png")

    @field_validator("heuristic")
    @classmethod
    def _known_heuristic(cls, v: str) -> str:
        from features.errors import ConfigError
        from features.estimators import get_estimator

        try:
            get_estimator(v)
        except ConfigError as err:  # pydantic reports ValueErrors with the config file and key
            raise ValueError(str(err).rstrip(".")) from None
        return v


class FeaturesConfig(StrictModel):
    """Settings of the Spark feature stages."""

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    rank: RankConfig = Field(default_factory=RankConfig)

"""A run's configuration: the layers' configs composed, loaded from YAML with one-line errors.

Example:
    >>> cfg = load_config("configs/sample_ctr.yaml")      # doctest: +SKIP
    >>> cfg.dataset.kind
    'ctr'
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embeddings.config import EmbeddingsConfig
from features.config import DatasetConfig, FeaturesConfig, SparkConfig
from features.errors import ConfigError
from pipelines.config import TrainConfig


class StoreConfig(BaseModel):
    """Feast settings (the feature store is optional in a run)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    project: str = "sparserec"
    ttl_days: int = Field(default=30, ge=1)
    offline_store: dict[str, Any] = Field(default_factory=lambda: {"type": "file"},
                                          description="Feast offline_store section; relative paths live in the store folder")
    online_store: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite"},
                                         description="Feast online_store section; sqlite defaults to online_store.db in the store folder")
    windows_days: list[int] = Field(default_factory=lambda: [1, 7],
                                    description="time windows (days) of the per-user / per-item count and CTR aggregates")


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spark: SparkConfig = Field(default_factory=SparkConfig)


class RunConfig(BaseModel):
    """Everything one `sparserec run` needs. Relative paths are resolved from the config file's folder."""

    model_config = ConfigDict(extra="forbid")
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")
    dataset: DatasetConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections, dotted paths allowed (all when none given), for stage skipping."""
        data = self.model_dump(mode="json")
        if sections:
            picked = {}
            for dotted in sections:
                node = data
                for part in dotted.split("."):
                    node = node[part]
                picked[dotted] = node
            data = picked
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at `loc` (used to suggest the right key)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                current = cand
                break
        else:
            return []
    return sorted(getattr(current, "model_fields", {}).keys())


def format_validation_error(source: str, err: ValidationError, model: type[BaseModel]) -> str:
    """One sentence for the first problem in `err`: file, key, what is expected."""
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p) and p not in ("function-after",))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = e["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{source}: unknown key '{key}'; {hint}allowed here: {', '.join(allowed)}."
    if kind == "missing":
        return f"{source}: key '{key}' is missing; add it (see configs/*.yaml for examples)."
    got = e.get("input")
    got_txt = f", got {got!r}" if got is not None and not isinstance(got, dict) else ""
    msg = e["msg"].removeprefix("Value error, ")
    return f"{source}: key '{key}': {msg}{got_txt}."


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p).resolve()


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None,
                 check_paths: bool = True) -> RunConfig:
    """Validate a config dict; resolve relative paths against `base_dir`; check input files exist."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}.")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, RunConfig)) from None
    base = base_dir or Path.cwd()
    cfg.dataset.path = _resolve(base, cfg.dataset.path)
    if cfg.dataset.items is not None:
        cfg.dataset.items.path = _resolve(base, cfg.dataset.items.path)
    cfg.output_dir = _resolve(base, cfg.output_dir)
    if check_paths:
        if not cfg.dataset.path.exists():
            raise ConfigError(f"{source}: key 'dataset.path': {cfg.dataset.path} does not exist; "
                              "fix the path (relative paths are read from the config file's folder) "
                              "or create the data with `sparserec generate`.")
        if cfg.dataset.items is not None and not cfg.dataset.items.path.exists():
            raise ConfigError(f"{source}: key 'dataset.items.path': {cfg.dataset.items.path} does not exist; fix the path.")
    return cfg


def load_config(path: str | Path, check_paths: bool = True) -> RunConfig:
    """Read and validate a YAML run config; every problem is a `ConfigError` with one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; check the path.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: {where}YAML syntax error: {problem}; fix the YAML.") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least a 'dataset' section.")
    return parse_config(data, str(path), path.parent.resolve(), check_paths)

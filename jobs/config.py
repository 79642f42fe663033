"""A run's configuration: the layers' configs composed, loaded from YAML with one-line errors.

Example:
    >>> cfg = load_config(Path(__file__).parents[1] / "configs" / "sample_ctr.yaml")
    >>> cfg.dataset.kind, cfg.dataset.format
    ('ctr', 'tsv')
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embeddings.config import EmbeddingsConfig
from features.config import DatasetConfig, FeaturesConfig, SparkConfig, resolve_split
from features.errors import ConfigError
from pipelines.runtime.config import TrainConfig


RUN_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"  # one folder name under output_dir: no '/', no '..', not hidden


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
    name: str = Field(default="run", description="the run folder's name under output_dir: letters, digits, '.', '_', '-'")
    seed: int = 0
    output_dir: Path = Path("runs")
    dataset: DatasetConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, v: str) -> str:
        if not re.fullmatch(RUN_NAME_PATTERN, v):
            raise ValueError(f"'{v}' is not a plain folder name (the run folder is output_dir/name); use letters, "
                             "digits, '.', '_' and '-' only, e.g. 'sample-ctr'")
        return v

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


def _admits(ann: Any, kind: type) -> bool:
    """True when annotation `ann` accepts values of exactly `kind` (bool), e.g. `bool | None`, `Any`."""
    if ann is kind or ann is Any:
        return True
    if typing.get_origin(ann) is typing.Literal:
        return any(type(a) is kind for a in typing.get_args(ann))
    return any(_admits(a, kind) for a in typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType, typing.Annotated))


def _first_bool_for_number(value: Any, ann: Any, loc: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key of the first `true`/`false` given where the model wants a number (pydantic reads it as 1/0)."""
    if isinstance(value, bool):
        return None if _admits(ann, bool) else loc
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (typing.Union, types.UnionType) else [ann]
    for a in args:
        while typing.get_origin(a) is typing.Annotated:
            a = typing.get_args(a)[0]
        if isinstance(value, dict) and isinstance(a, type) and issubclass(a, BaseModel):
            for k, v in value.items():
                f = a.model_fields.get(k) if isinstance(k, str) else None
                hit = _first_bool_for_number(v, f.annotation, (*loc, k)) if f is not None else None
                if hit:
                    return hit
        elif isinstance(value, dict) and typing.get_origin(a) is dict:
            for k, v in value.items():
                hit = _first_bool_for_number(v, typing.get_args(a)[1], (*loc, str(k)))
                if hit:
                    return hit
        elif isinstance(value, list) and typing.get_origin(a) is list:
            for i, v in enumerate(value):
                hit = _first_bool_for_number(v, typing.get_args(a)[0], (*loc, str(i)))
                if hit:
                    return hit
    return None


def check_role_columns(cfg: RunConfig, source: str) -> None:
    """Each column in at most one of label / timestamp / dense / categorical / multi_valued (ids may also be categorical)."""
    r = cfg.dataset.roles
    seen: dict[str, str] = {}
    named = [("label", [r.label]), ("timestamp", [r.timestamp]), ("dense", r.dense), ("categorical", r.categorical),
             ("multi_valued", r.multi_valued)]
    for role, cols in named:
        for col in cols:
            if col is None:
                continue
            if col in seen:
                where = "twice in" if seen[col] == role else f"in roles.{seen[col]} and in"
                hint = ("the label is what the model predicts, so it cannot be a feature; remove it from "
                        f"roles.{role}" if "label" in (seen[col], role) else f"keep it in one role only")
                raise ConfigError(f"{source}: key 'dataset.roles.{role}': column '{col}' is listed {where} "
                                  f"roles.{role}; {hint}.")
            seen[col] = role
    if r.label is not None:
        for key in ("session_id", "user_id", "item_id"):
            if getattr(r, key) == r.label:
                raise ConfigError(f"{source}: key 'dataset.roles.{key}': column '{r.label}' is also the label; "
                                  "an id column cannot be the label, fix one of them.")


def _get(data: Any, loc: tuple[str, ...]) -> Any:
    for k in loc:
        data = data[int(k)] if isinstance(data, list) else data[k]
    return data


# the model names of pipelines/ctr/model.py CTR_MODELS and pipelines/sessions/train.py SESSION_MODELS, listed here
# so a config is checked without importing torch (tests/jobs/test_config_checks.py keeps them equal)
MODELS_BY_KIND = {"ctr": ("dlrm", "dcn", "lr"), "sessions": ("m2trec", "sasrec", "gru4rec", "popularity"),
                  "interactions": ("m2trec", "sasrec", "gru4rec", "popularity")}


def check_model_for_kind(cfg: RunConfig, data: dict[str, Any], source: str) -> None:
    """A model named in the config must train on the dataset's kind (checked before any stage runs)."""
    named = ((data.get("training") or {}).get("model") or {}).get("name") if isinstance(data.get("training"), dict) else None
    allowed = MODELS_BY_KIND[cfg.dataset.kind]
    if named is not None and cfg.training.model.name not in allowed:
        raise ConfigError(f"{source}: key 'training.model.name': '{cfg.training.model.name}' does not train on a "
                          f"'{cfg.dataset.kind}' dataset; use one of {', '.join(allowed)}.")


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p).resolve()


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None,
                 check_paths: bool = True) -> RunConfig:
    """Validate a config dict; resolve relative paths against `base_dir`; check input files exist."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}.")
    hit = _first_bool_for_number(data, RunConfig, ())
    if hit:
        raise ConfigError(f"{source}: key '{'.'.join(hit)}': expected a number, got {_get(data, hit)!r}; "
                          "write a number (true/false are not counts).")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, RunConfig)) from None
    try:  # the split method fits the roles; a random split's seed defaults to the run's (#13.2)
        resolve_split(cfg.dataset, cfg.features.vocab)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    if cfg.features.vocab.split_seed is None:
        cfg.features.vocab.split_seed = cfg.seed
    check_role_columns(cfg, source)
    check_model_for_kind(cfg, data, source)
    base = base_dir or Path.cwd()
    cfg.dataset.path = _resolve(base, cfg.dataset.path)
    if cfg.dataset.items is not None:
        cfg.dataset.items.path = _resolve(base, cfg.dataset.items.path)
    for t in cfg.dataset.tables:
        t.path = _resolve(base, t.path)
    cfg.output_dir = _resolve(base, cfg.output_dir)
    if check_paths:
        if not cfg.dataset.path.exists():
            raise ConfigError(f"{source}: key 'dataset.path': {cfg.dataset.path} does not exist; "
                              "fix the path (relative paths are read from the config file's folder) "
                              "or create the data with `sparserec generate`.")
        for i, t in enumerate(cfg.dataset.tables):
            if not t.path.exists():
                raise ConfigError(f"{source}: key 'dataset.tables[{i}].path': {t.path} does not exist; fix the path.")
        if cfg.dataset.items is not None and not cfg.dataset.items.path.exists():
            raise ConfigError(f"{source}: key 'dataset.items.path': {cfg.dataset.items.path} does not exist; fix the path.")
    return cfg


def load_config(path: str | Path, check_paths: bool = True) -> RunConfig:
    """Read and validate a YAML run config; every problem is a `ConfigError` with one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; check the path.")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a YAML run config file, e.g. configs/sample_ctr.yaml.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", b"\x00", 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (binary or not UTF-8); give a YAML run config, "
                          "e.g. configs/sample_ctr.yaml.") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: {where}YAML syntax error: {problem}; fix the YAML.") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least a 'dataset' section.")
    return parse_config(data, str(path), path.parent.resolve(), check_paths)


CONFIG_SNAPSHOT = "config.yaml"  # the config a run ran with, kept in its folder (read by `sparserec predict --run`)


def save_config(cfg: RunConfig, run_dir: Path) -> Path:
    """Keep `cfg` as `<run_dir>/config.yaml`: the keys the user set, with paths resolved to absolute ones,
    so `load_config` on it gives the same resolved config wherever the run folder is read from.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> kept = save_config(load_config(Path(__file__).parents[1] / "configs" / "sample_ctr.yaml"), run)
        >>> kept.name, load_config(kept).dataset.path.is_absolute()
        ('config.yaml', True)
    """
    path = Path(run_dir) / CONFIG_SNAPSHOT
    text = yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("# the config this run last ran with (paths resolved); `sparserec predict --run` reads it\n" + text)
    tmp.replace(path)
    return path

"""The Feast repo folder: `feature_store.yaml`, apply (register), plan (diff), materialize.

Every path in `feature_store.yaml` is relative to the store folder (sources `data/`, registry
`registry.db`, SQLite `online_store.db`), so the folder keeps working after a run's temporary
folder is renamed into place. `StoreSettings.offline_store` / `online_store` point the same
definitions at any other store Feast supports (e.g. `{"type": "duckdb"}`, `{"type": "redis", ...}`).

Example::

    summary = register({"aggregates": run / "aggregates"}, run / "store", dataset, StoreConfig(), spark)
    materialize(run / "store")["views"]
    # -> ['item_stats', 'user_stats']
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from features.config import DatasetConfig
from features.errors import DataError
from features.store.definitions import Definitions, build_definitions
from features.store.feast_import import import_feast
from features.store.settings import StoreSettings
from features.store.sources import LAYOUT, write_sources

STORE_YAML = "feature_store.yaml"
SETTINGS = "store_settings.json"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def feature_store_config(settings: StoreSettings) -> dict[str, Any]:
    """The `feature_store.yaml` content: local file offline store and SQLite online store by default."""
    online = dict(settings.online_store)
    if online.get("type", "sqlite") == "sqlite":
        online = {"type": "sqlite", "path": "online_store.db", **online}
    return {"project": settings.project, "provider": "local",
            "registry": {"registry_type": "file", "path": "registry.db", "cache_ttl_seconds": 0},
            "offline_store": dict(settings.offline_store), "online_store": online,
            "entity_key_serialization_version": 3}


def open_store(root: Path):
    """The `FeatureStore` of the store folder `root` (a `DataError` when it is not one)."""
    root = Path(root)
    if not (root / STORE_YAML).exists():
        raise DataError(f"{root}: no {STORE_YAML} here; run `sparserec features register` to create the store.")
    os.environ.setdefault("FEAST_USAGE", "False")
    import_feast()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(root.resolve()))


def read_layout(root: Path) -> dict[str, Any]:
    path = Path(root) / LAYOUT
    if not path.exists():
        raise DataError(f"{path}: store layout missing; run `sparserec features register`.")
    return json.loads(path.read_text())


class _Settings:
    """Settings saved beside the store, so later commands rebuild the same definitions."""

    def __init__(self, d: dict[str, Any]):
        self.__dict__.update(d)


def saved_settings(root: Path) -> StoreSettings:
    return _Settings(json.loads((Path(root) / SETTINGS).read_text()))  # type: ignore[return-value]


def definitions(root: Path, settings: StoreSettings | None = None) -> Definitions:
    """The definitions generated from the folder's layout (and its saved settings)."""
    return build_definitions(read_layout(root), settings or saved_settings(root), Path(root))


def plan_changes(root: Path, settings: StoreSettings | None = None) -> list[tuple[str, str, str]]:
    """(object type, name, transition) for each object whose registered form would change.

    An empty list means applying the generated definitions again changes nothing.
    """
    store = open_store(root)
    registry_diff, _, _ = store.plan(definitions(root, settings).repo_contents())
    return [(str(d.feast_object_type.value if hasattr(d.feast_object_type, "value") else d.feast_object_type),
             d.name, d.transition_type.name) for d in registry_diff.feast_object_diffs
            if d.transition_type.name != "UNCHANGED" and not d.name.startswith("__dummy")
            and not (d.transition_type.name == "UPDATE" and _only_bookkeeping(d.feast_object_property_diffs))]


def _strip_meta(value: Any) -> Any:
    """A copy of a proto without its `meta` (creation / update times), or the value itself."""
    if hasattr(value, "DESCRIPTOR") and hasattr(value, "ListFields"):
        return _clear_meta(type(value).FromString(value.SerializeToString()))
    return value


def _clear_meta(msg: Any) -> Any:
    """Clear every nested `meta` (timestamps Feast rewrites on each apply, e.g. of a service's embedded sources)."""
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.name == "meta":
            msg.ClearField("meta")
        elif field.is_repeated:
            if not (field.message_type.GetOptions().map_entry):
                for item in value:
                    _clear_meta(item)
        else:
            _clear_meta(value)
    return msg


def _only_bookkeeping(property_diffs) -> bool:
    """True when every property differs only in timestamps: Feast's plan compares a view's embedded
    source including its `meta` (creation time), so an unchanged view looks updated."""
    return all(_strip_meta(p.val_existing) == _strip_meta(p.val_declared) for p in property_diffs)


def apply(root: Path, settings: StoreSettings | None = None) -> dict[str, Any]:
    """Register the generated definitions (`feast apply`); returns what changed."""
    defs = definitions(root, settings)
    changes = plan_changes(root, settings)
    store = open_store(root)
    store.apply(defs.objects())
    return {"changes": [list(c) for c in changes], "entities": sorted(defs.entities), "views": sorted(defs.views),
            "services": sorted(defs.services)}


def write_repo(out: Path, settings: StoreSettings) -> None:
    """`feature_store.yaml` and the saved settings in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / STORE_YAML).write_text(yaml.safe_dump(feature_store_config(settings), sort_keys=False))
    keep = {k: getattr(settings, k) for k in ("project", "ttl_days", "offline_store", "online_store", "windows_days")}
    (out / SETTINGS).write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")


def register(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: StoreSettings, spark) -> dict:
    """Stage: write the sources (Spark), `feature_store.yaml`, and apply the generated definitions.

    Inputs: `aggregates` (required), `vocab` (ids instead of raw values), `rank` (its
    feature_spec.json picks the selected features), `ingest` (the item table of session data).
    """
    spec = Path(inputs["rank"]) / "feature_spec.json" if "rank" in inputs else None
    layout = write_sources(Path(inputs["aggregates"]), Path(out), dataset, spark, vocab_dir=inputs.get("vocab"),
                           spec_path=spec, ingest_dir=inputs.get("ingest"))
    write_repo(Path(out), cfg)
    applied = apply(Path(out), cfg)
    rows = layout["counts"]["events_rows"]
    return {"rows_in": rows, "rows_out": rows, **applied, "counts": layout["counts"], "encoded": layout["encoded"]}


def _latest_time(root: Path, layout: dict[str, Any]) -> datetime:
    import pyarrow.dataset as pads

    latest = EPOCH
    for v in layout["views"]:
        col = pads.dataset(str(Path(root) / v["path"]), format="parquet").to_table(columns=[layout["timestamp"]])
        if col.num_rows:
            t = max(x for x in col.column(0).to_pylist() if x is not None)
            latest = max(latest, t if t.tzinfo else t.replace(tzinfo=timezone.utc))
    return latest


def materialize(root: Path, end: datetime | None = None) -> dict[str, Any]:
    """Load the online store up to `end` (default: just after the newest event), incrementally.

    Only the views marked online (entity-level: user, item, session) are loaded; the per-event view
    is read offline by training sets and would add one SQLite row per event.

    A view never materialized starts at `end - ttl` (older values would be expired anyway; no TTL:
    from the start); later calls continue where the previous one ended (`materialize_incremental`).
    """
    root = Path(root)
    layout = read_layout(root)
    definitions(root)  # a view over a missing source folder fails here, with its path
    store = open_store(root)
    end = end or (_latest_time(root, layout) + timedelta(seconds=1))
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    fresh, again = [], []
    for fv in store.list_feature_views():
        if fv.online:  # entity-level views; per-event features stay offline (training sets)
            (again if fv.most_recent_end_time is not None else fresh).append(fv)
    starts: dict[datetime, list[str]] = {}
    for fv in fresh:
        start = end - fv.ttl if fv.ttl and fv.ttl.total_seconds() > 0 else EPOCH
        starts.setdefault(start, []).append(fv.name)
    for start, names in starts.items():
        store.materialize(start_date=start, end_date=end, feature_views=names)
    if again:
        store.materialize_incremental(end_date=end, feature_views=[fv.name for fv in again])
    return {"end": end.isoformat(), "views": sorted(fv.name for fv in fresh + again),
            "first_time": sorted(fv.name for fv in fresh), "incremental": sorted(fv.name for fv in again)}


def registry_snapshot(root: Path) -> dict[str, bytes]:
    """Serialized specs of every registered object (by type/name), to compare two registry states.

    Creation / update times (`meta`) are left out: they are bookkeeping, not definitions.
    """
    store = open_store(root)
    snap: dict[str, bytes] = {}
    listings = {"entity": store.list_entities, "data_source": store.list_data_sources,
                "feature_view": store.list_feature_views, "feature_service": store.list_feature_services}
    for kind, lister in listings.items():
        for obj in lister():
            proto = obj.to_proto()
            spec = proto.spec if "spec" in proto.DESCRIPTOR.fields_by_name else proto
            snap[f"{kind}/{obj.name}"] = _clear_meta(type(spec).FromString(spec.SerializeToString())) \
                .SerializeToString(deterministic=True)
    return snap

"""Feast definitions generated from `layout.json` (itself made from the feature spec and config).

Nothing here is written per data set: entities come from the dataset's roles (user, item,
session, plus `event` for per-event features), one feature view per source with its timestamp
field and TTL (`ttl_days`; static item metadata has none), and one feature service per model of
the dataset kind. The same layout always gives equal objects, so a re-apply changes nothing.

Example::

    defs = build_definitions(json.loads((store / "layout.json").read_text()), StoreConfig(), store)
    sorted(defs.views)
    # -> ['events', 'item_stats', 'user_stats']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from features.errors import DataError
from features.store.feast_import import import_feast
from features.store.settings import StoreSettings
from features.store.sources import is_online


@dataclass
class Definitions:
    """The Feast objects of one store, by name."""

    project: str
    entities: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)

    def objects(self) -> list[Any]:
        return [*self.entities.values(), *self.sources.values(), *self.views.values(), *self.services.values()]

    def repo_contents(self):
        """As Feast's `RepoContents`, for `FeatureStore.plan` (a dry-run diff against the registry)."""
        import_feast()
        from feast.project import Project
        from feast.repo_contents import RepoContents

        return RepoContents(projects=[Project(name=self.project)], data_sources=list(self.sources.values()),
                            feature_views=list(self.views.values()), on_demand_feature_views=[],
                            stream_feature_views=[], label_views=[], entities=list(self.entities.values()),
                            feature_services=list(self.services.values()), permissions=[])


def feast_type(name: str):
    """Our layout type name -> Feast type (`array<string>` -> Array(String))."""
    import_feast()
    from feast import types as ft

    scalar = {"string": ft.String, "int64": ft.Int64, "int32": ft.Int32, "float64": ft.Float64,
              "float32": ft.Float32, "bool": ft.Bool}
    if name.startswith("array<"):
        inner = name[len("array<"):-1]
        if inner not in scalar:
            raise DataError(f"layout.json: type '{name}' has no Feast equivalent; cast the column at ingest.")
        return ft.Array(scalar[inner])
    if name not in scalar:
        raise DataError(f"layout.json: type '{name}' has no Feast equivalent; cast the column at ingest.")
    return scalar[name]


def _value_type(name: str):
    from feast import ValueType

    return {"string": ValueType.STRING, "int64": ValueType.INT64}[name]


def build_definitions(layout: dict[str, Any], settings: StoreSettings, root: Path, check_files: bool = True) -> Definitions:
    """Feast objects for the store in `root`; a view whose source folder is missing is a `DataError`."""
    import_feast()
    from feast import Entity, FeatureService, FeatureView, Field, FileSource

    defs = Definitions(project=settings.project)
    used = {e for v in layout["views"] for e in v["entities"]}
    for name, ent in layout["entities"].items():
        if name in used:
            defs.entities[name] = Entity(name=name, join_keys=[ent["join_key"]], value_type=_value_type(ent["type"]),
                                         description=f"{layout['dataset']}: {name} key column '{ent.get('column', ent['join_key'])}'")
    for v in layout["views"]:
        if check_files and not (Path(root) / v["path"]).exists():
            raise DataError(f"{Path(root) / v['path']}: feature view '{v['name']}' reads this folder but it does not "
                            "exist; re-run `sparserec features register` to rewrite the store's sources.")
        src = FileSource(name=f"{v['name']}_source", path=v["path"], timestamp_field=layout["timestamp"])
        keys = [Field(name=layout["entities"][e]["join_key"], dtype=feast_type(layout["entities"][e]["type"]))
                for e in v["entities"]]
        feats = [Field(name=f, dtype=feast_type(t)) for f, t in v["features"].items()]
        ttl = timedelta(days=settings.ttl_days) if v["ttl"] else timedelta(0)
        defs.sources[src.name] = src
        defs.views[v["name"]] = FeatureView(name=v["name"], entities=[defs.entities[e] for e in v["entities"]],
                                            ttl=ttl, schema=keys + feats, source=src,
                                            online=v.get("online", is_online(v["entities"])),
                                            tags={"dataset": layout["dataset"]})
    for model, names in layout["services"].items():
        defs.services[model] = FeatureService(name=model, features=[defs.views[n] for n in names],
                                              description=f"features of the {model} model")
    return defs

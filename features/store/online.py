"""Online lookup: the latest materialized feature vector of one entity key (SQLite by default).

Example::

    online_features(run / "store", "user", "0a1b2c3d")
    # -> {'user_events_1d': 3.0, 'user_clicks_1d': 1.0, 'user_ctr_1d': 0.333, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.errors import UserError
from features.store.repo import open_store, read_layout
from features.store.sources import is_online


def parse_entity(text: str) -> tuple[str, str]:
    """`user=42` -> ("user", "42"); a one-line `UserError` for anything else.

    Example:
        >>> parse_entity("user=42")
        ('user', '42')
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UserError(f"--entity '{text}': expected NAME=KEY, e.g. --entity user=42.")
    return name.strip(), value.strip()


def feature_refs(layout: dict[str, Any], entity: str, service: str | None = None) -> list[str]:
    """`view:feature` references of the views keyed by `entity` (within `service` when given)."""
    views = layout["views"]
    if service is not None:
        if service not in layout["services"]:
            raise UserError(f"--service '{service}': not in this store; services are: {', '.join(sorted(layout['services']))}.")
        views = [v for v in views if v["name"] in layout["services"][service]]
    return [f"{v['name']}:{f}" for v in views if v["entities"] == [entity] for f in v["features"]]


def online_features(root: Path, entity: str, key: str, service: str | None = None,
                    require_found: bool = True) -> dict[str, Any]:
    """Feature name -> latest online value for `entity=key`.

    Unknown entity names, and keys with no value at all (absent from the data, or not yet
    materialized) are a `UserError` unless `require_found` is False (then values are None).
    """
    layout = read_layout(root)
    ents = {e for v in layout["views"] for e in v["entities"]}
    if entity not in ents:
        raise UserError(f"--entity {entity}=...: unknown entity '{entity}'; this store has: {', '.join(sorted(ents))}.")
    online_ents = {e for v in layout["views"] if v.get("online", is_online(v["entities"])) for e in v["entities"]}
    if entity not in online_ents:
        raise UserError(f"--entity {entity}={key}: '{entity}' features are offline only (one row per {entity}, read "
                        f"by `features training-set`); online entities: {', '.join(sorted(online_ents))}.")
    spec = layout["entities"][entity]
    value: Any = key
    if spec["type"] == "int64":
        try:
            value = int(key)
        except ValueError:
            raise UserError(f"--entity {entity}={key}: '{entity}' keys are whole numbers; give e.g. "
                            f"--entity {entity}=42.") from None
        if not -(1 << 63) <= value < (1 << 63):
            raise UserError(f"--entity {entity}={key}: the key is outside the 64-bit range of '{entity}' keys; "
                            "give a key that is in the data.")
    refs = feature_refs(layout, entity, service)
    store = open_store(root)
    got = store.get_online_features(features=refs, entity_rows=[{spec["join_key"]: value}]).to_dict()
    values = {r.split(":", 1)[1]: got[r.split(":", 1)[1]][0] for r in refs}
    if require_found and all(v is None for v in values.values()):
        raise UserError(f"{root}: no online values for {entity}={key}; the key is not in the data ({spec['join_key']}) "
                        "or the store is not materialized (run `sparserec features materialize`).")
    return values

"""Point-in-time training sets from the store, written in the trainer's `encoded/` layout.

The entity dataframe is one row per event: (event_id, entity keys, event_timestamp, label), and
`get_historical_features` takes every feature as of that event's time: a value stamped after the
event is never used, one older than the view's TTL is missing (null, encoded as 0). The result
is written like the vocab stage's folder: `encoded/train|validation|test/` (label int32, dense float32 =
log1p(max(x, 0)) with missing -> 0, categorical int64 ids, same column names, plus the raw
timestamp column) with a `schema.json`, so the trainer can read its data from here.

Example::

    s = build_training_set({"store": run / "store"}, run / "training_set", service="dlrm")
    s["rows"]["train"] > 0
    # -> True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from features.errors import DataError, UserError
from features.store.repo import open_store, read_layout

SPLITS = ("train", "validation", "test")


def entity_rows(root: Path):
    """The events of the store as a pandas entity dataframe (keys, event_timestamp, label, time)."""
    import pyarrow.dataset as pads

    layout = read_layout(root)
    keys = [e["join_key"] for e in layout["entities"].values()]
    cols = [*keys, layout["timestamp"], layout["event_time"], *([layout["label"]] if layout["label"] else [])]
    path = Path(root) / "data" / "events"
    if not path.exists():
        raise DataError(f"{path}: the store's events are missing; re-run `sparserec features register`.")
    return pads.dataset(str(path), format="parquet").to_table(columns=cols).to_pandas()


def historical_features(root: Path, entity_df, service: str | None = None, features: list[str] | None = None):
    """`entity_df` joined point-in-time with a feature service's (or the listed `view:feature`) features.

    Example::

        df = historical_features(store, pd.DataFrame({"C10": ["a"], "event_timestamp": [t]}),
                                 features=["user_stats:user_events_1d"])
    """
    store = open_store(root)
    layout = read_layout(root)
    if service is not None:
        names = [s.name for s in store.list_feature_services()]
        if service not in names:
            raise UserError(f"{root}: no feature service '{service}'; services are: {', '.join(sorted(names))}.")
        refs = store.get_feature_service(service)
    else:
        refs = features or []
    # Feast 0.67's file (dask) offline store drops an entity row whose only matches are older than
    # the TTL, and collapses rows with equal join keys and time. Features depend only on (keys,
    # time), so we ask for each distinct (keys, time) once and join the answer back onto every row:
    # no row is lost and an expired value comes back missing.
    ts = layout["timestamp"]
    keys = [e["join_key"] for e in layout["entities"].values() if e["join_key"] in entity_df.columns]
    if ts not in entity_df.columns:
        raise UserError(f"entity dataframe: column '{ts}' (the event time) is missing; add it.")
    request = entity_df[keys + [ts]].drop_duplicates(ignore_index=True)
    got = store.get_historical_features(entity_df=request, features=refs).to_df()
    got[ts] = got[ts].astype(entity_df[ts].dtype)
    return entity_df.merge(got, on=keys + [ts], how="left", validate="many_to_one")


def _cuts(times, validation_share: float, test_share: float) -> dict[str, Any]:
    """Cut timestamps like the vocab stage (features/split.py): the latest `test_share` of rows is
    test, the `validation_share` before it validation; None = that period is empty."""
    import numpy as np

    t = np.sort(np.asarray(times, dtype=np.int64))
    if len(t) == 0:
        raise DataError("training set: the store holds no events; check the aggregates stage output.")
    # Spark's percentile_approx (exact on small data): the value at 1-based position ceil(p * n)
    val, test = (t[max(0, int(np.ceil(q * len(t))) - 1)] for q in (1 - test_share - validation_share, 1 - test_share))
    val_at = None if validation_share == 0 else float(val)
    test_at = None if test_share == 0 else float(test)
    if val_at is not None and test_at is not None and val_at >= test_at:
        val_at = test_at
    return {"method": "time", "validation_start": val_at, "test_start": test_at}


def _schema_cuts(vocab_dir: Path | None) -> dict[str, Any] | None:
    """The vocab stage's cuts (schema.json), so both training sets split the same way (when given)."""
    if vocab_dir is None or not (Path(vocab_dir) / "schema.json").exists():
        return None
    cuts = json.loads((Path(vocab_dir) / "schema.json").read_text()).get("cuts")
    if not isinstance(cuts, dict) or cuts.get("method") != "time":
        raise DataError(f"{Path(vocab_dir) / 'schema.json'}: no time cuts ('cuts' with method 'time'); "
                        "re-run the vocab stage on data with a timestamp, or leave out --vocab.")
    return cuts


def _split_of(t, cuts: dict[str, Any]):
    """'train' / 'validation' / 'test' per timestamp (a row at a cut belongs to the later period)."""
    import numpy as np

    out = np.full(len(t), "train", dtype=object)
    if cuts["validation_start"] is not None:
        out[np.asarray(t) >= cuts["validation_start"]] = "validation"
    if cuts["test_start"] is not None:
        out[np.asarray(t) >= cuts["test_start"]] = "test"
    return out


def encode_frame(df, layout: dict[str, Any]):
    """The trainer's encoded columns: label int32, dense float32 log1p(max(x,0)) (missing 0), ids int64."""
    import numpy as np
    import pandas as pd

    dense = [*layout["dense"], *[c for c in layout["aggregates"] if c in df.columns]]
    out = pd.DataFrame({layout["label"]: df[layout["label"]].astype("int32")})
    for d in dense:
        x = pd.to_numeric(df[d], errors="coerce").astype("float64").to_numpy()
        if d in layout["aggregates"] or not layout["encoded"]:
            x = np.log1p(np.maximum(np.nan_to_num(x, nan=0.0), 0.0))
        out[d] = np.nan_to_num(x, nan=0.0).astype("float32")
    for c in layout["categorical"]:
        out[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype("int64")
    out[layout["event_time"]] = df[layout["event_time"]].astype("int64")
    return out, dense


def build_training_set(inputs: Mapping[str, Path], out: Path, service: str = "dlrm", validation_share: float = 0.1,
                       test_share: float = 0.1) -> dict:
    """Stage: read the store's point-in-time training set for `service`, write `encoded/` + schema.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(inputs["store"])
    layout = read_layout(root)
    if layout["kind"] != "ctr" or not layout["encoded"]:
        raise DataError(f"{root}: training sets in the encoded layout need a ctr store registered with the vocab "
                        "stage (`sparserec features register --vocab DIR`).")
    entities = entity_rows(root)
    joined = historical_features(root, entities, service=service)
    joined = joined.sort_values([layout["event_time"], "event_id"], kind="stable").reset_index(drop=True)
    if len(joined) != len(entities):
        raise RuntimeError(f"training set: {len(entities)} events but {len(joined)} rows came back from Feast")
    enc, dense = encode_frame(joined, layout)
    cuts = _schema_cuts(inputs.get("vocab")) or _cuts(enc[layout["event_time"]], validation_share, test_share)
    split = _split_of(enc[layout["event_time"]].to_numpy(), cuts)
    parts = {name: enc[split == name] for name in SPLITS}
    for name, part in parts.items():
        (Path(out) / "encoded" / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), Path(out) / "encoded" / name / "part-0.parquet")
    schema = {"label": layout["label"], "dense": dense, "categorical": layout["categorical"],
              "vocab_sizes": layout["vocab_sizes"], "timestamp": layout["event_time"], "columns": list(enc.columns),
              "dense_transform": "log1p(max(x,0)), missing -> 0",
              "rows": {k: int(len(v)) for k, v in parts.items()},
              "unseen": {k: {c: int((v[c] == 1).sum()) for c in layout["categorical"]} for k, v in parts.items()},
              "cuts": cuts, "source": "feast", "service": service}
    (Path(out) / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    return {"rows_in": int(len(entities)), "rows_out": int(len(enc)), "rows": schema["rows"], "service": service,
            "features": len(dense) + len(layout["categorical"])}

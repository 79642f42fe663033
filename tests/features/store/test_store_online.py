"""Online store after materialization equals the latest offline values; the serve-features command."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.errors import UserError
from features.store.online import online_features, parse_entity
from features.store.repo import read_layout
from features.store.training_set import historical_features


@pytest.mark.spark
def test_online_values_equal_latest_offline_values(ctr_store):
    store = ctr_store["store"]
    end = pd.Timestamp(ctr_store["materialized"]["end"])
    layout = read_layout(store)
    for entity, keys in {"user": ["u1", "u2", "u3"], "item": ["i1", "i2", "i3"]}.items():
        view = next(v for v in layout["views"] if v["entities"] == [entity])
        feats = list(view["features"])
        entity_df = pd.DataFrame({f"{entity}_id": keys, "event_timestamp": [end] * len(keys)})
        offline = historical_features(store, entity_df, features=[f"{view['name']}:{f}" for f in feats])
        offline = offline.set_index(f"{entity}_id")
        for key in keys:
            online = online_features(store, entity, key, require_found=False)
            for f in feats:
                want = offline.loc[key, f]
                assert (online[f] is None) == pd.isna(want), (entity, key, f)
                if online[f] is not None:
                    assert online[f] == pytest.approx(float(want)), (entity, key, f)
    # spot values: u1's newest row (T+9d) saw one earlier event, clicked; u2's only row expired by the TTL
    u1 = online_features(store, "user", "u1")
    assert u1["user_events_7d"] == 1.0 and u1["user_ctr_7d"] == 1.0
    assert all(v is None for v in online_features(store, "user", "u2", require_found=False).values())


@pytest.mark.spark
def test_serve_features_prints_a_table_and_rejects_bad_entities(ctr_store):
    from jobs.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["serve-features", "--store", str(ctr_store["store"]), "--entity", "item=i1"])
    assert res.exit_code == 0, res.output
    assert "item=i1" in res.output and "item_events_7d" in res.output
    assert "item_ctr_7d" in res.output and "0.5" in res.output  # i1 at T+9d: 2 earlier events, 1 click
    res = runner.invoke(app, ["serve-features", "--store", str(ctr_store["store"]), "--entity", "shop=1"])
    assert isinstance(res.exception, UserError) and "unknown entity 'shop'" in str(res.exception)
    with pytest.raises(UserError, match=r"no online values for user=nobody"):
        online_features(ctr_store["store"], "user", "nobody")
    with pytest.raises(UserError, match="expected NAME=KEY"):
        parse_entity("user")


@pytest.mark.spark
def test_only_entity_views_are_materialized(ctr_store):
    import sqlite3

    assert ctr_store["materialized"]["views"] == ["item_stats", "user_stats"]
    with sqlite3.connect(ctr_store["store"] / "online_store.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = {t: db.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{t}"').fetchone()[0] for t in tables}
    assert all(keys[t] == 0 for t in tables if t.endswith("_events"))              # no per-event rows at all
    assert 1 <= keys[next(t for t in tables if t.endswith("_user_stats"))] <= 3     # at most one key per user (u1..u3)


@pytest.mark.spark
@pytest.mark.parametrize("entity", ["event=abc", "event=99999999999999999999", "event=3"])
def test_serve_features_for_events_is_one_line(ctr_store, entity):
    from jobs.cli import app

    res = CliRunner().invoke(app, ["serve-features", "--store", str(ctr_store["store"]), "--entity", entity])
    assert isinstance(res.exception, UserError), res.output
    msg = str(res.exception)
    assert "\n" not in msg and msg.startswith(f"--entity {entity}: 'event' features are offline only")
    assert "online entities: item, user" in msg

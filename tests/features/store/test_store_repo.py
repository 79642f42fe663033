"""Generated definitions, idempotent re-apply, incremental materialization, one-line errors, no torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta

import pandas as pd
import pytest
from tiny_ctr import ROOT_DIR, TTL_DAYS, D, T

from features.errors import DataError
from features.store.repo import apply, definitions, materialize, open_store, plan_changes, registry_snapshot


@pytest.mark.spark
def test_definitions_are_generated_from_roles_and_config(ctr_store):
    reg = ctr_store["registered"]
    assert reg["entities"] == ["event", "item", "user"] and reg["services"] == ["dcn", "dlrm", "lr"]
    store = open_store(ctr_store["store"])
    views = {v.name: v for v in store.list_feature_views()}
    assert sorted(views) == ["events", "item_stats", "user_stats"]
    assert views["user_stats"].ttl == timedelta(days=TTL_DAYS)
    assert views["user_stats"].entities == ["user"] and views["user_stats"].batch_source.path == "data/user_stats"
    assert [f.name for f in views["events"].features] == ["C1", "C10", "C11", "I1"]
    assert {f.name for f in views["item_stats"].features} >= {"item_events_1d", "item_ctr_7d"}
    user = store.get_entity("user")
    assert user.join_key == "user_id" and "C10" in user.description
    dlrm = store.get_feature_service("dlrm")
    assert [p.name for p in dlrm.feature_view_projections] == ["events", "user_stats", "item_stats"]
    cfg = (ctr_store["store"] / "feature_store.yaml").read_text()
    assert "path: registry.db" in cfg and "path: online_store.db" in cfg and "type: file" in cfg
    assert (ctr_store["store"] / "online_store.db").exists() and (ctr_store["store"] / "registry.db").exists()


@pytest.mark.spark
def test_reapply_with_unchanged_definitions_changes_nothing(ctr_store):
    before = registry_snapshot(ctr_store["store"])
    assert plan_changes(ctr_store["store"]) == []
    again = apply(ctr_store["store"])
    assert again["changes"] == []
    assert registry_snapshot(ctr_store["store"]) == before
    assert len(before) == 3 + 3 + 3 + 3  # entities, sources, views, services


@pytest.mark.spark
def test_materialize_again_is_incremental_and_a_missing_source_is_a_one_line_error(ctr_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(ctr_store["store"], copy)   # the folder is relocatable: every path in it is relative
    end = pd.Timestamp(T + 10 * D, unit="s", tz="UTC").to_pydatetime()
    s = materialize(copy, end)
    assert s["incremental"] == ["item_stats", "user_stats"] and s["first_time"] == []   # per-event view: offline only
    shutil.rmtree(copy / "data" / "item_stats")
    with pytest.raises(DataError, match=r"feature view 'item_stats' reads this folder but it does not exist") as e:
        materialize(copy)
    assert "\n" not in str(e.value) and str(copy / "data" / "item_stats") in str(e.value)
    with pytest.raises(DataError, match="run `sparserec features register`"):
        definitions(tmp_path / "nowhere")


def test_store_modules_import_feast_without_torch():
    code = ("import sys; from features.store.feast_import import import_feast; import features.store.repo, "
            "features.store.online, features.store.training_set; import_feast(); from feast import FeatureStore; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]

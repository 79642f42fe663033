"""Ray Train: 2 workers with DSL, reading the split through Ray Data, one of which dies mid-run (its process
SIGKILLs itself); the run resumes from its checkpoint, completes, keeps one DSL budget across both workers'
tables and reaches the AUC of the uninterrupted single-process run within a small tolerance.

One Ray run (the module fixture `killed_run`) covers every claim, because a Ray Train run costs ~20-60 s on the
shared 2-core machine; the materialized input (one Arrow share per worker) trains in test_dsl_modes' row-mode fit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from embeddings.config import DSLConfig, EmbeddingsConfig
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.failure import FAIL_MARKER
from pipelines.ctr.trainer import train_stage
from tests.pipelines.encoded_data import dense_plan

AUC_TOLERANCE = 0.03
EMB = EmbeddingsConfig(learning_rate=0.1)   # few steps: learn fast
DSL_EMB = EmbeddingsConfig(learning_rate=0.1, dsl=DSLConfig(enabled=True, density=0.3, update_every=3, init="random"))


def _cfg(single: bool, fail_at: int | None = None) -> TrainConfig:
    cfg = TrainConfig(batch_size=512, epochs=2, checkpoint_every=4, log_every=3, fail_at_step=fail_at, max_failures=1,
                      dense_learning_rate=1e-2)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = single
    cfg.ray.num_workers, cfg.ray.cpus_per_worker = 2, 0.5   # leaves a CPU for Ray Data's read tasks
    return cfg


@pytest.fixture(scope="module")
def killed_run(ray_local, encoded_ctr, tmp_path_factory) -> dict:
    """One Ray fit for every claim below (a Ray Train run costs ~20-60 s here): DSL on 2 workers reading the split
    through Ray Data every epoch (`materialize_below_mb: 0`, the path of data larger than memory), one worker
    SIGKILLed at step 10; and the same DSL run in a single process.

    Main-effect features only: with the XOR pair, 18 steps either find the interaction or not, and AUC swings
    ±0.06 with the seed alone; on these the single-process DSL val AUC is 0.622-0.646 over seeds 0-2. Their
    tables are tiny to mid-sized (10-379 rows), so the planner shards them differently."""
    tmp = tmp_path_factory.mktemp("ray_killed")
    (tmp / "plan").mkdir()
    plan = dense_plan(encoded_ctr["schema"], dim=8, features=["C1", "C2", "C4", "C14"])
    plan.save(tmp / "plan" / "embedding_plan.json")
    inputs = {"vocab": encoded_ctr["vocab"], "plan": tmp / "plan"}
    single = train_stage(inputs, tmp / "single", _cfg(True), DSL_EMB, seed=0, show_progress=False)
    cfg = _cfg(False, fail_at=10)
    cfg.ray.materialize_below_mb = 0.0
    ray_summary = train_stage(inputs, tmp / "ray", cfg, DSL_EMB, seed=0, show_progress=False)
    return {"single": single, "ray": ray_summary, "out": tmp / "ray", "plan": plan,
            "per_epoch": (encoded_ctr["schema"]["rows"]["train"] // 2) // 256}


@pytest.mark.ray
def test_a_dead_worker_is_restarted_from_its_checkpoint_and_the_run_completes(killed_run):
    out, per_epoch = killed_run["out"], killed_run["per_epoch"]
    death = json.loads((out / FAIL_MARKER).read_text())
    assert death["step"] == 10                                           # the planted death happened
    with pytest.raises(ProcessLookupError):                              # ... as a real process death
        os.kill(death["pid"], 0)
    m = json.loads((out / "metrics.json").read_text())
    # restarted once, from a checkpoint taken before the death (every 4 steps and at the epoch's end, reported
    # asynchronously): the newest one the controller had registered, at least step 4's, long done by step 10
    (resumed,) = m["history"]["resumed_from"]
    assert 4 <= resumed < 10, resumed
    assert killed_run["ray"]["steps"] == 2 * per_epoch == killed_run["single"]["steps"]
    ckpt = out / m["training"]["checkpoint"]
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "train_state_rank1.pt"} <= {p.name for p in ckpt.iterdir()}


@pytest.mark.ray
def test_two_streaming_workers_read_every_epoch_whole_and_match_the_single_process_run(killed_run):
    out, per_epoch, ray_summary, single = killed_run["out"], killed_run["per_epoch"], killed_run["ray"], killed_run["single"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["mode"] == "ray" and m["training"]["workers"] == 2
    (resumed,) = m["history"]["resumed_from"]
    # every step after the restart drew whole 512-row global batches from the stream (`examples` counts the last attempt)
    assert m["training"]["ray_input"] == "stream" and m["training"]["examples"] == (2 * per_epoch - resumed) * 512
    assert [v["step"] for v in m["history"]["validation"]] == [per_epoch, 2 * per_epoch]   # each epoch read the stream
    aucs = {k: (ray_summary[k], single[k]) for k in ("val_auc", "test_auc")}
    assert ray_summary["val_auc"] > 0.6, aucs
    assert abs(ray_summary["val_auc"] - single["val_auc"]) < AUC_TOLERANCE, aucs
    assert abs(ray_summary["test_auc"] - single["test_auc"]) < AUC_TOLERANCE, aucs


@pytest.mark.ray
def test_dsl_on_two_workers_keeps_one_global_budget_across_sharded_tables(killed_run):
    import torch

    from embeddings.dsl.masks import active_count

    plan = killed_run["plan"]
    sd = torch.load(killed_run["out"] / "model" / "model.pt", weights_only=True)
    tables = {k: v for k, v in sd.items() if "embedding_bags" in k}
    budget = sum(active_count(0.3, t.rows, t.dim) for t in plan.tables)
    active = sum(int(torch.count_nonzero(v)) for v in tables.values())
    assert len(tables) == len(plan.tables)
    # every rank kept the same masks (the gradient evidence is summed across ranks), also across the restart:
    # one budget over all tables, a few active weights may sit at exactly zero (regrown, not yet stepped)
    assert 0.9 * budget <= active <= budget, (active, budget)
    densities = sorted(float(torch.count_nonzero(v)) / v.numel() for v in tables.values())
    assert densities[-1] - densities[0] > 0.02, densities       # the global ranking moved weights between tables


def test_worker_niceness_controller_poll_and_quiet_services_reach_ray_and_the_environment_is_restored(monkeypatch):
    from pipelines.runtime.ray_driver import POLL_ENV, QUIET_ENV, controller_env, worker_runtime_env

    cfg = TrainConfig()
    assert worker_runtime_env(cfg) == {"env_vars": {"RAY_worker_niceness": "0"}}
    cfg.ray.worker_niceness = None
    assert worker_runtime_env(cfg) == {}
    monkeypatch.setenv(POLL_ENV, "7")
    monkeypatch.setenv("RAY_TRAIN_METRICS_ENABLED", "1")
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    with controller_env(cfg):
        assert os.environ[POLL_ENV] == "0.5"
        assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0" and os.environ["RAY_TRAIN_METRICS_ENABLED"] == "0"
    assert os.environ[POLL_ENV] == "7" and os.environ["RAY_TRAIN_METRICS_ENABLED"] == "1"
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
    monkeypatch.delenv(POLL_ENV)
    cfg.ray.controller_poll_s, cfg.ray.quiet = None, False
    with controller_env(cfg):
        assert POLL_ENV not in os.environ and "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
        assert os.environ["RAY_TRAIN_METRICS_ENABLED"] == "1"
    assert set(QUIET_ENV) == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_METRICS_ENABLED"}


@pytest.mark.ray
def test_small_splits_are_materialized_one_share_per_worker_and_large_ones_stream(ray_local, encoded_ctr, tmp_path: Path):
    import pyarrow.parquet as pq

    from pipelines.ctr.trainer import make_job, ray_train_inputs

    plan = encoded_ctr["plan_obj"]
    rows = encoded_ctr["schema"]["rows"]["train"]
    labels = pq.read_table(Path(encoded_ctr["vocab"]) / "encoded" / "train", columns=["label"]).column("label").to_pylist()
    job = make_job(Path(encoded_ctr["vocab"]), plan, tmp_path, _cfg(False), EMB, seed=0)
    datasets, data_config, small = ray_train_inputs(job)
    assert small.ray_input == "materialized" and datasets == {}  # no Ray Data: one Arrow share per worker
    assert data_config._datasets_to_split == [] and len(small.train_shares) == 2
    share = rows // 2
    for r in (0, 1):
        table = ray_local.get(small.train_shares[r])
        assert table.column("label").to_pylist() == labels[r * share:(r + 1) * share]   # consecutive equal shares
        assert table.column("label").num_chunks == 1             # contiguous: batches are zero-copy slices
        assert table.schema.names == job.spec("train").columns   # only the model's columns

    job.train.ray.materialize_below_mb = 0.0
    datasets, data_config, big = ray_train_inputs(job)
    assert big.ray_input == "stream" and sorted(datasets) == ["train"] and big.train_shares is None
    assert data_config._datasets_to_split == ["train"]           # one Ray Data stream split across the workers

"""Which Ray a run starts or joins: a named cluster (config or RAY_ADDRESS), else a new local one, never
the cluster that some `ray start` on this machine last recorded (`/tmp/ray/ray_current_cluster`)."""

from __future__ import annotations

import pytest
import ray

from pipelines.ctr.predict import OBJECT_STORE_BYTES, PredictConfig
from pipelines.ctr.predict import ray_init as predict_ray_init
from pipelines.runtime.config import TrainConfig
from pipelines.runtime.ray_driver import ray_init, start_ray


@pytest.fixture
def init_calls(monkeypatch) -> list[dict]:
    """Ray as if not started; each `ray.init` call's keyword arguments, instead of starting anything."""
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_without_an_address_training_starts_a_local_ray_and_never_autodetects_one(init_calls):
    start_ray(None, num_cpus=3)
    # address=None would make ray.init join the cluster a `ray start` recorded on the machine
    assert init_calls[0]["address"] == "local"
    assert init_calls[0]["num_cpus"] == 3
    cfg = TrainConfig()
    ray_init(cfg)   # a training run: the workers' CPUs plus one for Ray Data's read tasks, at least
    assert init_calls[1]["address"] == "local"
    assert init_calls[1]["num_cpus"] >= cfg.ray.num_workers * cfg.ray.cpus_per_worker + 1


def test_a_named_address_or_ray_address_is_joined(init_calls, monkeypatch):
    start_ray("ray://head:10001", num_cpus=3)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    start_ray(None, num_cpus=3)
    assert [c["address"] for c in init_calls] == ["ray://head:10001", "10.0.0.5:6379"]
    assert all("num_cpus" not in c for c in init_calls)  # Ray refuses num_cpus when joining a cluster


def test_predict_without_an_address_starts_a_local_ray(init_calls, monkeypatch):
    predict_ray_init(PredictConfig(workers=2))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    predict_ray_init(PredictConfig(workers=2))
    assert [c["address"] for c in init_calls] == ["local", "10.0.0.5:6379"]
    assert init_calls[0]["num_cpus"] == 2
    assert init_calls[0]["object_store_memory"] == OBJECT_STORE_BYTES

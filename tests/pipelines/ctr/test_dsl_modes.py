"""The train stage with each DSL mode: `row` trains the compact physical tables and exports them as
they trained; `lazy` ends with every table within its budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from embeddings.config import DSLConfig, EmbeddingsConfig
from embeddings.dsl.rows import row_budget
from embeddings.spec import EmbeddingPlan
from pipelines.runtime.config import TrainConfig
from pipelines.ctr.trainer import train_stage
from tests.pipelines.ctr.test_training import single_cfg, trained_tables


def test_row_mode_trains_compact_tables_and_exports_them(encoded_ctr, tmp_path: Path):
    plan: EmbeddingPlan = encoded_ctr["plan_obj"]
    kept = {t.name: row_budget(0.2, t.rows) for t in plan.tables}
    row_plan = EmbeddingPlan([replace(t, method="pruned", params={"rows_kept": kept[t.name]}, dsl_density=0.2)
                              for t in plan.tables])
    (tmp_path / "plan").mkdir()
    row_plan.save(tmp_path / "plan" / "embedding_plan.json")
    emb = EmbeddingsConfig(dsl=DSLConfig(enabled=True, mode="row", density=0.2, update_every=3, init="random",
                                         initial_exchange=0.3))
    out = tmp_path / "row"
    out.mkdir()
    train_stage({"vocab": encoded_ctr["vocab"], "plan": tmp_path / "plan"}, out, single_cfg(max_steps=9), emb,
                seed=0, show_progress=False)
    sd = torch.load(out / "model" / "model.pt", weights_only=True)
    for t in plan.tables:  # the trained table is the budget's rows plus the zero sentinel
        weight = next(v for k, v in sd.items() if k.endswith(f"embedding_bags.{t.name}.weight"))
        remap = next(v for k, v in sd.items() if k.endswith(f"row_remaps.{t.name}"))
        assert tuple(weight.shape) == (kept[t.name] + 1, t.dim) and float(weight[-1].abs().sum()) == 0.0
        assert int((remap < kept[t.name]).sum()) == kept[t.name] and remap.dtype == torch.int32
    updates = json.loads((out / "metrics.json").read_text())["history"]["dsl"]
    assert [u["step"] for u in updates] == [3, 6, 9] and all(u["active"] == u["budget"] for u in updates)
    live = sum(v.numel() * v.element_size() for k, v in sd.items() if "embedding_bags" in k or "row_remaps" in k)
    assert live < updates[-1]["embedding_bytes"] < live + 3 * sum(t.rows * 4 for t in plan.tables)  # + state, evidence
    info = json.loads((out / "model" / "model.json").read_text())["embeddings"]
    assert info["bytes_after"] <= 0.25 * info["dense_fp32_bytes"]
    exported = json.loads((out / "metrics.json").read_text())["embeddings_export"]
    assert exported == {"bytes": info["bytes_after"], "plan_bytes": row_plan.total_bytes,
                        "dense_fp32_bytes": info["dense_fp32_bytes"]}
    assert exported["bytes"] <= exported["plan_bytes"]


def test_lazy_mode_ends_within_the_budget(encoded_ctr, tmp_path: Path):
    emb = EmbeddingsConfig(dsl=DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=3, init="random"))
    tables, active, total = trained_tables(encoded_ctr, tmp_path / "lazy", emb)
    assert 0.25 * total < active <= round(0.3 * total) + len(tables)


@pytest.mark.ray
def test_row_mode_on_two_workers_keeps_every_rank_on_the_same_rows(ray_local, encoded_ctr, tmp_path: Path):
    """Row mode under DMP on 2 Ray workers (evidence and row norms summed across ranks): the compact
    tables train and export, the sentinel stays zero, every physical slot holds one id. The suite's fit on the
    materialized input (a small split read once, one Arrow share per worker; test_ray_training's fit streams)."""
    plan: EmbeddingPlan = encoded_ctr["plan_obj"]
    kept = {t.name: row_budget(0.3, t.rows) for t in plan.tables}
    (tmp_path / "plan").mkdir()
    EmbeddingPlan([replace(t, method="pruned", params={"rows_kept": kept[t.name]}, dsl_density=0.3)
                   for t in plan.tables]).save(tmp_path / "plan" / "embedding_plan.json")
    cfg = TrainConfig(batch_size=512, epochs=1, checkpoint_every=4, log_every=3, dense_learning_rate=1e-2)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = False
    cfg.ray.num_workers, cfg.ray.cpus_per_worker = 2, 0.5
    emb = EmbeddingsConfig(learning_rate=0.1, dsl=DSLConfig(enabled=True, mode="row", density=0.3, update_every=3,
                                                            init="random", initial_exchange=0.3, grad_steps=3))
    out = tmp_path / "row2"
    summary = train_stage({"vocab": encoded_ctr["vocab"], "plan": tmp_path / "plan"}, out, cfg, emb, seed=0,
                          show_progress=False)
    assert summary["steps"] >= 6
    sd = torch.load(out / "model" / "model.pt", weights_only=True)
    for t in plan.tables:
        weight = next(v for k, v in sd.items() if k.endswith(f"embedding_bags.{t.name}.weight"))
        remap = next(v for k, v in sd.items() if k.endswith(f"row_remaps.{t.name}"))
        active = remap[remap < kept[t.name]]
        assert tuple(weight.shape) == (kept[t.name] + 1, t.dim) and float(weight[-1].abs().sum()) == 0.0
        assert sorted(active.tolist()) == list(range(kept[t.name]))  # every slot holds one id
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["ray_input"] == "materialized" and m["training"]["workers"] == 2   # 6000 rows: one share each
    updates = m["history"]["dsl"]
    assert sum(u["exchanged"] for u in updates) > 0 and all(u["active"] == u["budget"] for u in updates)

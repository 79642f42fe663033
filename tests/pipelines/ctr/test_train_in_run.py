"""The train stage inside a run folder (`jobs.runs.run_stage`: written in `.tmp-train-*`, renamed to `train/`):
the exported model describes itself with paths that survive the rename (issue 13.11), and a killed attempt's
checkpoints survive the sweep of its temporary folder, so the re-run resumes from them (issue 18.9)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from embeddings.config import EmbeddingsConfig
from jobs.runs import WORK_DIR, run_stage
from pipelines.runtime.config import TrainConfig
from pipelines.ctr.trainer import train_stage


def _cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(batch_size=256, epochs=1, checkpoint_every=4, log_every=5, **kw)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return cfg


def _inputs(encoded_ctr) -> dict[str, Path]:
    return {"vocab": Path(encoded_ctr["vocab"]), "plan": Path(encoded_ctr["plan"])}


def test_model_json_paths_are_relative_to_the_published_model_folder(encoded_ctr, tmp_path: Path):
    run = tmp_path / "run"
    fn = partial(train_stage, cfg=_cfg(max_steps=6), emb_cfg=EmbeddingsConfig(), seed=0, show_progress=False)
    run_stage(run, "train", fn, _inputs(encoded_ctr), {"training": "t"}, seed=0)
    folder = run / "train" / "model"
    text = (folder / "model.json").read_text()
    info = json.loads(text)
    assert info["embeddings"]["path"] == "embeddings.pt" and info["embeddings_file"] == "embeddings.pt"
    assert (folder / info["embeddings"]["path"]).stat().st_size > 0
    assert ".tmp-train" not in text and str(tmp_path) not in text


def test_a_train_stage_killed_after_a_checkpoint_resumes_from_it_on_re_run(encoded_ctr, tmp_path: Path):
    run = tmp_path / "run"
    per_epoch = encoded_ctr["schema"]["rows"]["train"] // 256
    fn = partial(train_stage, cfg=_cfg(fail_at_step=7), emb_cfg=EmbeddingsConfig(), seed=0, show_progress=False)
    config = {"training": "failing"}
    with pytest.raises(RuntimeError, match="planted worker failure at step 7"):
        run_stage(run, "train", fn, _inputs(encoded_ctr), config, seed=0)
    assert not (run / "train").exists() and not list(run.glob(".tmp-train-*"))
    (work,) = (run / WORK_DIR).iterdir()                        # the attempt's checkpoints outlive it
    assert work.name.startswith("train-") and (work / "checkpoints" / "step_00000004").is_dir()
    # the same stage again (same inputs and config): it resumes from step 4, and does not die at step 7 again
    m = run_stage(run, "train", fn, _inputs(encoded_ctr), config, seed=0)
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["history"]["resumed_from"] == [4] and m.summary["steps"] == per_epoch
    assert metrics["training"]["examples"] == (per_epoch - 4) * 256           # steps 1-4 were not taken again
    assert (run / "train" / metrics["training"]["checkpoint"] / ".metadata").is_file()   # the stage keeps its checkpoints
    assert sorted(p.name for p in (run / "train" / "checkpoints").iterdir()) == ["step_00000016", "step_00000018"]
    assert not list((run / WORK_DIR).iterdir())                               # the work folder went with the publish

"""The train stage inside a run folder (`jobs.runs.run_stage`: written in `.tmp-train-*`, renamed to `train/`):
the exported model describes itself with paths that survive the rename (issue 13.11)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from embeddings.config import EmbeddingsConfig
from jobs.runs import run_stage
from pipelines.config import TrainConfig
from pipelines.trainer import train_stage


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


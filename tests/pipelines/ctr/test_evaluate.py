"""Offline evaluation of a run: a split the vocab stage wrote no rows for is left out and named, not skipped
in silence; any other problem reading a split is raised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import torch.distributed.checkpoint as dcp

from pipelines.ctr.batches import EncodedSchema, batch_spec
from pipelines.ctr.evaluate import evaluate_run
from pipelines.ctr.model import build_ctr_model
from pipelines.runtime.config import TrainConfig


def _checkpoint(encoded_ctr, cfg: TrainConfig, folder: Path) -> Path:
    schema = EncodedSchema.load(Path(encoded_ctr["vocab"]) / "schema.json")
    model = build_ctr_model(encoded_ctr["plan_obj"], len(batch_spec(schema, encoded_ctr["plan_obj"]).dense), cfg.model)
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(folder))
    return folder


def test_a_split_without_rows_is_named_and_a_broken_one_raises(encoded_ctr, tmp_path: Path):
    cfg = TrainConfig(batch_size=512, device="cpu")
    cfg.model.dense_arch, cfg.model.over_arch = [8], [8]
    vocab = tmp_path / "vocab"
    shutil.copytree(encoded_ctr["vocab"], vocab)
    shutil.rmtree(vocab / "encoded" / "test")
    ckpt = _checkpoint(encoded_ctr, cfg, tmp_path / "ckpt")

    res = evaluate_run(ckpt, vocab, encoded_ctr["plan_obj"], cfg)
    assert list(res["splits"]) == ["validation"]
    assert res["splits"]["validation"]["rows"] == encoded_ctr["schema"]["rows"]["validation"]
    assert res["skipped_splits"] == {"test": f"{vocab / 'encoded' / 'test'}: no Parquet files; run the 'vocab' stage "
                                             "(it writes encoded/test/)"}

    first = sorted((vocab / "encoded" / "validation").rglob("*.parquet"))[0]
    first.write_bytes(b"not parquet")
    with pytest.raises(pa.ArrowInvalid, match="Parquet"):               # raised, not left out
        evaluate_run(ckpt, vocab, encoded_ctr["plan_obj"], cfg)

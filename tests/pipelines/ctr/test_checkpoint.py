"""Checkpoints: a DMP model restored from one predicts exactly as before, keeps training exactly as
the uninterrupted model does (fused and dense optimizer state restored), and loads unsharded."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from embeddings.config import EmbeddingsConfig
from pipelines.ctr.batches import EncodedSchema, batch_spec, parquet_batches
from pipelines.ctr.checkpoint import TrainState, load_weights, read_checkpoint, write_checkpoint
from pipelines.runtime.config import ModelConfig
from pipelines.ctr.model import build_ctr_model
from embeddings.sharding import dense_optimizer
from pipelines.runtime.distributed import local_process_group, shard_model


def _setup(plan, n_dense, seed):
    torch.manual_seed(seed)
    model = shard_model(build_ctr_model(plan, n_dense, ModelConfig(name="dlrm", dense_arch=[16], over_arch=[16])),
                        EmbeddingsConfig(learning_rate=0.05), torch.device("cpu"))
    return model, dense_optimizer(model, 1e-2, "adam")


def _step(model, opt, b):
    loss = F.binary_cross_entropy_with_logits(model(b.dense, b.sparse), b.labels)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _predict(model, b):
    model.eval()
    with torch.no_grad():
        out = model(b.dense, b.sparse)
    model.train()
    return out


def test_round_trip_restores_predictions_and_training(encoded_ctr, tmp_path: Path):
    schema = EncodedSchema.load(encoded_ctr["vocab"] / "schema.json")
    plan = encoded_ctr["plan_obj"]
    spec = batch_spec(schema, plan)
    batches = list(parquet_batches(encoded_ctr["vocab"] / "encoded" / "train", spec, 128))[:8]
    val = next(parquet_batches(encoded_ctr["vocab"] / "encoded" / "validation", spec, 256))
    with local_process_group():
        a, opt_a = _setup(plan, len(spec.dense), seed=0)
        for b in batches[:4]:
            _step(a, opt_a, b)
        write_checkpoint(tmp_path / "ck", a, opt_a, TrainState(epoch=1, batch=4, step=4), dsl_state=None)
        before = _predict(a, val)

        b_model, opt_b = _setup(plan, len(spec.dense), seed=123)       # different init
        assert not torch.allclose(_predict(b_model, val), before)
        state, _ = read_checkpoint(tmp_path / "ck", b_model, opt_b)
        assert (state.epoch, state.batch, state.step) == (1, 4, 4)
        assert torch.equal(_predict(b_model, val), before)

        # both keep training on the same batches: identical only if both optimizers' states came back
        for b in batches[4:]:
            _step(a, opt_a, b)
            _step(b_model, opt_b, b)
        assert torch.allclose(_predict(b_model, val), _predict(a, val), atol=1e-6)

    plain = load_weights(tmp_path / "ck", build_ctr_model(plan, len(spec.dense), ModelConfig(name="dlrm", dense_arch=[16], over_arch=[16])))
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(val.dense, val.sparse), before, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        ".metadata", "__0_0.distcp", "dense_optimizer.pt", "history.json", "train_state_rank0.pt"]

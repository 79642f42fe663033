"""The seeded per-epoch shuffle of the training order (issue 13.1): on a train split sorted by label (what the vocab
stage wrote without a timestamp), the first batches mix labels, the order is a function of seed and epoch, a
resumed epoch skips exactly its consumed batches, Ray shares mix within and across shares, and training on the
sorted split ends with a better validation loss than file order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embeddings.config import EmbeddingsConfig
from pipelines.ctr.batches import EncodedSchema, batch_spec
from pipelines.runtime.config import TrainConfig
from pipelines.ctr.loop import LocalIO
from pipelines.ctr.shuffle import epoch_permutation, share_indices, shuffled_share, shuffled_tables
from pipelines.ctr.trainer import make_job, train_stage


@pytest.fixture(scope="module")
def sorted_vocab(encoded_ctr, tmp_path_factory) -> Path:
    """The encoded fixture with its train split sorted by label (negatives first), in 3 files of 500-row groups."""
    vocab = tmp_path_factory.mktemp("sorted_vocab")
    shutil.copy(encoded_ctr["vocab"] / "schema.json", vocab / "schema.json")
    for split in ("validation", "test"):
        shutil.copytree(encoded_ctr["vocab"] / "encoded" / split, vocab / "encoded" / split)
    train = pq.read_table(encoded_ctr["vocab"] / "encoded" / "train").sort_by("label")
    (vocab / "encoded" / "train").mkdir(parents=True)
    third = -(-train.num_rows // 3)
    for k in range(3):
        pq.write_table(train.slice(k * third, third), vocab / "encoded" / "train" / f"part-{k:05d}.parquet",
                       row_group_size=500)
    return vocab


def _cfg(shuffle: bool = True, **kw) -> TrainConfig:
    cfg = TrainConfig(batch_size=256, epochs=1, checkpoint_every=1000, log_every=5, shuffle=shuffle, **kw)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return cfg


def _labels(vocab: Path, plan, tmp_path: Path, cfg: TrainConfig, seed: int, epoch: int, skip: int = 0) -> list[list[float]]:
    job = make_job(vocab, plan, tmp_path, cfg, EmbeddingsConfig(), seed)
    spec = batch_spec(EncodedSchema.load(vocab / "schema.json"), plan)
    return [b.labels.tolist() for b in LocalIO(job).train_batches(spec, 256, skip=skip, epoch=epoch)]


def test_single_process_order_is_shuffled_per_epoch_reproducible_and_resumable(sorted_vocab, encoded_ctr, tmp_path: Path):
    plan = encoded_ctr["plan_obj"]
    rows = encoded_ctr["schema"]["rows"]["train"]
    plain = _labels(sorted_vocab, plan, tmp_path, _cfg(shuffle=False), seed=0, epoch=0)
    assert set(plain[0]) == {0.0} and set(plain[-1]) == {1.0}       # file order: label-sorted batches
    first = _labels(sorted_vocab, plan, tmp_path, _cfg(), seed=0, epoch=0)
    assert len(first) == len(plain) == rows // 256                  # the same full batches, none lost
    rate = np.mean(sum(first, []))
    for batch in first[:3]:                                         # mixed labels at the observed rate
        assert 0.5 * rate < np.mean(batch) < 1.5 * rate, (np.mean(batch), rate)
    assert _labels(sorted_vocab, plan, tmp_path, _cfg(), seed=0, epoch=0) == first   # same seed, same epoch: same
    assert _labels(sorted_vocab, plan, tmp_path, _cfg(), seed=0, epoch=1) != first   # a new order every epoch
    assert _labels(sorted_vocab, plan, tmp_path, _cfg(), seed=1, epoch=0) != first   # and per seed
    assert _labels(sorted_vocab, plan, tmp_path, _cfg(), seed=0, epoch=0, skip=7) == first[7:]  # resume mid-epoch


def test_small_buffer_still_shuffles_every_row_once(sorted_vocab):
    ids = pq.read_table(sorted_vocab / "encoded" / "train").column("C1").to_pylist()
    pieces = list(shuffled_tables(sorted_vocab / "encoded" / "train", ["label", "C1"], seed=3, epoch=0, buffer_rows=1000))
    assert all(p.num_rows >= 1000 for p in pieces[:-1]) and len(pieces) > 2   # buffers of whole row groups
    out = [v for p in pieces for v in p.column("C1").to_pylist()]
    assert sorted(out) == sorted(ids) and out != ids
    first = pieces[0].column("label").to_numpy()
    assert 0 < first.mean() < 1                                      # row groups of both labels in the first buffer


def test_ray_shares_are_one_global_permutation_dealt_across_ranks():
    table = pa.table({"row": np.arange(10)})
    shares = [shuffled_share(table, world=2, rank=r, seed=0, epoch=0).column("row").to_pylist() for r in (0, 1)]
    assert [len(s) for s in shares] == [5, 5] and set(shares[0]).isdisjoint(shares[1])
    assert shares[0] + shares[1] == epoch_permutation(10, 0, 0).tolist()
    assert {r < 5 for r in shares[0]} == {True, False}               # rank 0 holds rows of both original shares
    again = shuffled_share(table, world=2, rank=0, seed=0, epoch=0).column("row").to_pylist()
    other = shuffled_share(table, world=2, rank=0, seed=0, epoch=1).column("row").to_pylist()
    assert again == shares[0] and other != shares[0]
    assert share_indices(11, 2, 1, 0, 0).size == 5                    # an equal split drops the remainder row


@pytest.mark.ray
def test_ray_data_stream_shuffle_is_reproducible_from_seed_and_epoch(ray_local):
    import ray.data

    from pipelines.ctr.shuffle import stream_seed

    ds = ray.data.from_arrow(pa.table({"row": np.arange(400)})).repartition(8)
    ds = ds.randomize_block_order(seed=ray.data.RandomSeedConfig(seed=0, reseed_after_execution=False))

    def rows(epoch: int) -> list[int]:
        return [r for b in ds.iter_batches(batch_size=50, batch_format="pyarrow", local_shuffle_buffer_size=400,
                                           local_shuffle_seed=stream_seed(0, epoch, 0))
                for r in b.column("row").to_pylist()]

    first = rows(0)
    assert sorted(first) == list(range(400)) and first != list(range(400))
    assert rows(0) == first and rows(1) != first


def test_training_on_a_label_sorted_split_is_better_shuffled(sorted_vocab, encoded_ctr, tmp_path: Path):
    inputs = {"vocab": sorted_vocab, "plan": encoded_ctr["plan"]}
    loss = {}
    for shuffle in (False, True):
        out = tmp_path / f"shuffle_{shuffle}"
        out.mkdir()
        train_stage(inputs, out, _cfg(shuffle=shuffle, dense_learning_rate=1e-2), EmbeddingsConfig(learning_rate=0.1),
                    seed=0, show_progress=False)
        loss[shuffle] = json.loads((out / "metrics.json").read_text())["evaluation"]["splits"]["validation"]["log_loss"]
    # file order ends on a run of positives and predicts them everywhere; the shuffled run stays calibrated
    assert loss[True] < loss[False] - 0.05, loss

"""The runtime's checkpoint pieces both families use: atomic publishing with a retention rule, the newest
complete folder, and RNG state per rank (torch and named generators)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.runtime.checkpoint import latest, publish, rank_file, restore_rng, rng_state


def _write(text: str):
    return lambda folder: (folder / "done").write_text(text)


def test_publish_keeps_the_newest_and_the_protected_folder(tmp_path: Path):
    for step in range(1, 6):
        publish(tmp_path, f"step_{step:04d}", _write(str(step)), keep=2, protect="step_0002")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0002", "step_0004", "step_0005"]
    publish(tmp_path, "step_0005", _write("again"), keep=2)                 # the same name is replaced
    assert (tmp_path / "step_0005" / "done").read_text() == "again"


def test_a_failing_writer_leaves_no_folder_behind(tmp_path: Path):
    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path, "epoch_0001", broken, keep=2)
    assert list(tmp_path.iterdir()) == []                                  # no hidden temporary folder either


def test_latest_is_the_newest_complete_folder(tmp_path: Path):
    assert latest(tmp_path, "epoch_*") is None
    publish(tmp_path, "epoch_0001", _write("1"), keep=3)
    publish(tmp_path, "epoch_0001_step_00000150", _write("2"), keep=3)      # mid-epoch 2 sorts after epoch 1's end
    (tmp_path / "epoch_0002").mkdir()                                      # no marker: not complete
    assert latest(tmp_path, "epoch_*", "done").name == "epoch_0001_step_00000150"
    assert latest(tmp_path, "epoch_*").name == "epoch_0002"


def test_rng_state_round_trips_torch_and_named_generators(tmp_path: Path):
    gens = {"order": torch.Generator().manual_seed(3)}
    torch.manual_seed(7)
    saved = rng_state(gens)
    torch.save(saved, tmp_path / "rng_rank0.pt")
    expected = (torch.rand(3), torch.rand(3, generator=gens["order"]))
    torch.manual_seed(99)
    gens["order"].manual_seed(99)
    restore_rng(torch.load(rank_file(tmp_path, "rng_rank{rank}.pt", 1), weights_only=True), gens)  # rank 1: rank 0's file
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.rand(3, generator=gens["order"]), expected[1])

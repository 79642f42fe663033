"""DSL on one-id bags: the pooled gradient is masked, so the fused optimizer never moves an inactive
weight and nothing is re-masked; longer bags in the same batch are still re-masked."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

import embeddings.dsl.controller as dsl_module
from embeddings.config import DSLConfig
from embeddings.dsl import DSLController
from tests.embeddings.cpu_tbe import cpu_tbe


def _remask_calls(monkeypatch) -> list[tuple[int, list[int]]]:
    """Record (table rows, re-masked rows) of every re-masking call."""
    calls: list[tuple[int, list[int]]] = []
    original = dsl_module.remask_rows

    def recording(shard, mask, rows):
        calls.append((mask.shape[0], rows.tolist()))
        original(shard, mask, rows)

    monkeypatch.setattr(dsl_module, "remask_rows", recording)
    return calls


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sgd"])  # FBGEMM has no CPU Adam
def test_one_id_bags_keep_inactive_weights_at_zero_without_remasking(optimizer, monkeypatch):
    calls = _remask_calls(monkeypatch)
    # table 0: one id per bag; table 1: bags of 0, 1 or 2 ids
    tbe = cpu_tbe([(50, 4), (30, 8)], optimizer)
    dsl = DSLController(tbe, DSLConfig(enabled=True, density=0.3, update_every=4, initial_exchange=0.5,
                                       end_fraction=0.9, init="random"), total_steps=40)
    gen = torch.Generator().manual_seed(1)
    exchanged = 0
    for step in range(40):
        one = (torch.rand(8, generator=gen) ** 2 * 50).long()
        lens = torch.tensor([1, 0, 2, 1, 2, 1, 0, 1])
        mixed = torch.randint(0, 30, (int(lens.sum()),), generator=gen)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x", "y"], values=torch.cat([one, mixed]),
                                                  lengths=torch.cat([torch.ones(8, dtype=torch.long), lens]))
        before = {k: v.clone() for k, v in dsl.masks.items()}
        calls.clear()
        pooled = tbe(kjt.values(), kjt.offsets())
        dsl.observe(kjt, pooled)
        pooled.pow(2).sum().backward()
        stats = dsl.after_step(step)
        exchanged += stats["exchanged"]
        # only the rows of the two-id bags of table 1 were re-masked
        two_id_rows = sorted(set(mixed[torch.repeat_interleave(lens > 1, lens)].tolist()))
        assert calls == [(30, two_id_rows)], step
        assert dsl.active_weights() == dsl.budget
        for i, w in enumerate(tbe.split_embedding_weights()):
            mask = dsl.masks[f"t{i}"]
            assert int(torch.count_nonzero(w[~mask])) == 0, (optimizer, step, i)
            if stats["updated"]:
                assert torch.all(w[mask & ~before[f"t{i}"]] == 0)  # regrown at zero
    assert exchanged > dsl.budget // 2
    assert any(int(torch.count_nonzero(w)) > 0 for w in tbe.split_embedding_weights())


def test_rowwise_adagrad_state_sees_only_the_active_weights_gradient():
    tbe = cpu_tbe([(12, 4)])
    dsl = DSLController(tbe, DSLConfig(enabled=True, density=0.5, update_every=1000, init="random"),
                         total_steps=10_000)
    ids = torch.tensor([3, 7, 3, 0, 11, 7])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x"], values=ids, lengths=torch.ones(6, dtype=torch.long))
    pooled = tbe(kjt.values(), kjt.offsets())
    # a gradient that is nonzero at inactive weights too (pooled itself is zero there)
    grad_out = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(3))
    dsl.observe(kjt, pooled)
    (pooled * grad_out).sum().backward()
    dsl.after_step(0)
    mask = dsl.masks["t0"].float()
    row_grad = torch.zeros(12, 4).index_add_(0, ids, grad_out) * mask
    state = tbe.split_optimizer_states()[0][0]
    assert torch.allclose(state, row_grad.pow(2).mean(1), rtol=1e-5, atol=1e-8)
    # the accumulator took the unmasked gradient (growing needs the inactive weights' evidence)
    assert torch.allclose(dsl.grad_acc["t0"], torch.zeros(12, 4).index_add_(0, ids, grad_out).abs(), atol=1e-6)
    assert float(dsl.grad_acc["t0"][mask == 0].sum()) > 0

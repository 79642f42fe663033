"""Lazy DSL (dsl.mode: lazy): inactive weights of multi-id bags drift between updates, every update
and the end zero them (the budget holds at updates and at the end), one-id bags stay masked, and
evidence comes from `grad_steps` sampled steps only."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

import embeddings.dsl.controller as controller_module
from embeddings.config import DSLConfig
from embeddings.dsl import DSLController, LazyDSLController, make_controller
from tests.embeddings.cpu_tbe import cpu_tbe


def _kjt(gen: torch.Generator, lens: torch.Tensor) -> KeyedJaggedTensor:
    one = (torch.rand(8, generator=gen) ** 2 * 50).long()
    mixed = torch.randint(0, 30, (int(lens.sum()),), generator=gen)
    return KeyedJaggedTensor.from_lengths_sync(keys=["x", "y"], values=torch.cat([one, mixed]),
                                               lengths=torch.cat([torch.ones(8, dtype=torch.long), lens]))


def _step(tbe, dsl, kjt, step: int) -> dict:
    pooled = tbe(kjt.values(), kjt.offsets())
    dsl.observe(kjt, pooled)
    (pooled - 0.5).pow(2).sum().backward()
    return dsl.after_step(step)


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sgd"])
def test_budget_holds_at_every_update_and_at_the_end_not_between(optimizer):
    tbe = cpu_tbe([(50, 4), (30, 8)], optimizer)
    cfg = DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=4, initial_exchange=0.5, end_fraction=0.9,
                    init="random", grad_steps=2)
    dsl = make_controller(tbe, cfg, total_steps=40)
    assert isinstance(dsl, LazyDSLController) and dsl.exact_from == 36
    gen = torch.Generator().manual_seed(1)
    drifted_between = exchanged = 0
    for step in range(40):
        stats = _step(tbe, dsl, _kjt(gen, torch.tensor([1, 0, 2, 1, 3, 1, 0, 2])), step)
        exchanged += stats["exchanged"]
        w0, w1 = tbe.split_embedding_weights()
        assert int(torch.count_nonzero(w0[~dsl.masks["t0"]])) == 0, step  # one-id bags: masked gradient
        off = int(torch.count_nonzero(w1[~dsl.masks["t1"]]))
        if stats["updated"] or step >= dsl.exact_from - 1:
            assert off == 0, step  # projected at the update, and exact through the final phase
        else:
            drifted_between += off
        assert dsl.active_weights() == dsl.budget
    assert drifted_between > 0 and exchanged > 0
    nonzero = sum(int(torch.count_nonzero(w)) for w in tbe.split_embedding_weights())
    assert 0 < nonzero <= dsl.budget


def test_evidence_comes_from_grad_steps_sampled_steps_per_interval(monkeypatch):
    calls = []
    real = controller_module.accumulate
    monkeypatch.setattr(controller_module, "accumulate", lambda g, lk, acc: calls.append(1) or real(g, lk, acc))
    tbe = cpu_tbe([(50, 4), (30, 8)])
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=10, end_fraction=1.0,
                                           init="random", grad_steps=3), total_steps=40)
    gen = torch.Generator().manual_seed(2)
    for step in range(30):
        _step(tbe, dsl, _kjt(gen, torch.full((8,), 2)), step)
    assert len(calls) == 3 * 3  # three intervals, three sampled steps each


def test_lazy_equals_exact_when_nothing_can_drift():
    """One-id bags only and evidence on every step: lazy makes exactly exact's exchanges."""
    out = []
    for mode in ("exact", "lazy"):
        tbe = cpu_tbe([(60, 4)])
        cfg = DSLConfig(enabled=True, mode=mode, density=0.25, update_every=5, initial_exchange=0.4, init="random",
                        grad_steps=5)
        dsl = make_controller(tbe, cfg, total_steps=30)
        assert type(dsl) is (DSLController if mode == "exact" else LazyDSLController)
        gen = torch.Generator().manual_seed(4)
        for step in range(30):
            ids = (torch.rand(12, generator=gen) ** 2 * 60).long()
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x"], values=ids, lengths=torch.ones(12, dtype=torch.long))
            _step(tbe, dsl, kjt, step)
        out.append((dsl.masks["t0"].clone(), tbe.split_embedding_weights()[0].clone(), dsl.exchanged_total))
    assert out[0][2] > 0 and out[0][2] == out[1][2]
    assert torch.equal(out[0][0], out[1][0]) and torch.allclose(out[0][1], out[1][1])


@pytest.mark.parametrize("sample", [64, 1 << 16])  # a bracket from few samples, and (nearly) the whole table
def test_one_pass_update_chooses_what_exact_selection_chooses(monkeypatch, sample):
    import embeddings.dsl.lazy as lazy_module
    from embeddings.dsl.masks import exchange_positions

    monkeypatch.setattr(lazy_module, "_SAMPLE", sample)
    monkeypatch.setattr(lazy_module, "_PASS_CHUNK_BYTES", 256)  # many chunks per table
    for trial in range(4):
        tbe = cpu_tbe([(120, 8), (70, 4), (40, 12)])
        dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, init="random"),
                                total_steps=100, seed=trial)
        gen = torch.Generator().manual_seed(20 + trial)
        weights = tbe.split_embedding_weights()
        with torch.no_grad():
            for i, w in enumerate(weights):
                name = f"t{i}"
                w.copy_(torch.round(torch.randn(w.shape, generator=gen) * 4) / 4)  # ties; drift at inactive weights
                hot = torch.rand(w.shape[0], generator=gen) < 0.4
                dsl.grad_acc[name].copy_(torch.round(torch.rand(w.shape, generator=gen) * 8) * hot.unsqueeze(1))
                dsl._seen[name] = [hot.nonzero().squeeze(1)]
        masks = {k: m.clone() for k, m in dsl.masks.items()}
        projected = {f"t{i}": w.detach().clone() * masks[f"t{i}"] for i, w in enumerate(weights)}
        acc = {k: a.clone() for k, a in dsl.grad_acc.items()}
        n = dsl.budget // (3 + trial)
        expected = exchange_positions(projected, masks, acc, n)
        moved = dsl._one_pass_update(n)
        assert moved == sum(int(g.numel()) for _, g in expected.values()) > 0
        for i, w in enumerate(weights):
            name = f"t{i}"
            new = masks[name].clone()
            pruned, grown = expected[name]
            new.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
            assert torch.equal(dsl.masks[name], new), (trial, name)
            assert int(torch.count_nonzero(w[~new])) == 0  # projected, pruned and grown weights at zero
            assert torch.equal(w[new & masks[name]], projected[name][new & masks[name]])  # survivors untouched

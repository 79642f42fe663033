"""Lazy DSL (dsl.mode: lazy): inactive weights drift between updates (no hook, no mask on a step
that is not sampled), every update and the end zero them (the budget holds at updates and at the
end), evidence comes from `grad_steps` sampled steps only, and the update works on the rows the
interval looked up while choosing exactly what exact's selection chooses."""

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
        off = sum(int(torch.count_nonzero(w[~dsl.masks[f"t{i}"]])) for i, w in enumerate(tbe.split_embedding_weights()))
        if stats["updated"] or step >= dsl.exact_from - 1:
            assert off == 0, step  # projected at the update, and exact through the final phase
        else:
            drifted_between += off  # one-id bags drift too: their gradient is not masked
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


def test_a_step_that_is_not_sampled_registers_no_hook():
    tbe = cpu_tbe([(50, 4), (30, 8)])
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=10, end_fraction=1.0,
                                           init="random", grad_steps=2), total_steps=40)
    gen = torch.Generator().manual_seed(3)
    hooked = []
    for step in range(10):
        kjt = _kjt(gen, torch.full((8,), 2))
        pooled = tbe(kjt.values(), kjt.offsets())
        dsl.observe(kjt, pooled)
        hooked.append(bool(pooled._backward_hooks))
        pooled.sum().backward()
        dsl.after_step(step)
    assert sum(hooked) == 2 and len(dsl._batches) == 0  # 2 sampled steps; the batches went at the update


def test_lazy_equals_exact_with_a_stateless_optimizer():
    """SGD, a loss linear in the pooled output (so drift cannot change a gradient) and evidence on every
    step: drift is zeroed before any choice and leaves no optimizer state behind, so lazy makes
    exactly exact's exchanges and ends with exact's weights."""
    out = []
    for mode in ("exact", "lazy"):
        tbe = cpu_tbe([(60, 4), (40, 8)], "sgd")
        cfg = DSLConfig(enabled=True, mode=mode, density=0.25, update_every=5, initial_exchange=0.4, init="random",
                        grad_steps=5)
        dsl = make_controller(tbe, cfg, total_steps=30)
        assert type(dsl) is (DSLController if mode == "exact" else LazyDSLController)
        gen = torch.Generator().manual_seed(4)
        for step in range(30):
            kjt = _kjt(gen, torch.tensor([1, 0, 2, 1, 3, 1, 0, 2]))
            pooled = tbe(kjt.values(), kjt.offsets())
            dsl.observe(kjt, pooled)
            pooled.backward(torch.randn(pooled.shape, generator=gen))
            dsl.after_step(step)
        out.append(([m.clone() for m in dsl.masks.values()], [w.clone() for w in tbe.split_embedding_weights()],
                    dsl.exchanged_total))
    assert out[0][2] > 0 and out[0][2] == out[1][2]
    assert all(torch.equal(a, b) for a, b in zip(out[0][0], out[1][0]))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out[0][1], out[1][1]))


@pytest.mark.parametrize("factor", [0.5, 2.0, 50.0])  # cache rebuilt at most updates, some, (nearly) never
def test_incremental_update_chooses_what_exact_selection_chooses(monkeypatch, factor):
    """Four updates in a row on one controller (the prune cache carried across them): each time some
    rows are looked up (their weights change, inactive ones drift), some rows carry evidence; the
    masks after the update are exact's choice on the projected weights, untouched rows keep their
    weights, and every inactive weight is zero."""
    import embeddings.dsl.lazy as lazy_module
    from embeddings.dsl.masks import exchange_positions

    monkeypatch.setattr(lazy_module, "_CACHE_FACTOR", factor)
    monkeypatch.setattr(lazy_module, "_PASS_CHUNK_BYTES", 256)  # many chunks per table
    tbe = cpu_tbe([(120, 8), (70, 4), (40, 12)], "sgd")
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, init="random"), total_steps=100)
    weights = tbe.split_embedding_weights()
    gen = torch.Generator().manual_seed(20)
    for update in range(4):
        ids = []
        with torch.no_grad():
            for i, w in enumerate(weights):
                name = f"t{i}"
                looked = (torch.rand(w.shape[0], generator=gen) < (0.9 if update == 2 else 0.2)).nonzero().squeeze(1)
                w[looked] = torch.round(torch.randn(looked.numel(), w.shape[1], generator=gen) * 4) / 4  # ties, drift
                ids.append(looked)
                hot = looked[torch.rand(looked.numel(), generator=gen) < 0.5]
                dsl.grad_acc[name].zero_()
                dsl.grad_acc[name][hot] = torch.round(torch.rand(hot.numel(), w.shape[1], generator=gen) * 8)
                dsl._seen[name] = [hot]
        dsl._batches = [(KeyedJaggedTensor.from_lengths_sync(keys=["a", "b", "c"], values=torch.cat(ids),
                                                             lengths=torch.tensor([x.numel() for x in ids])), True)]
        masks = {k: m.clone() for k, m in dsl.masks.items()}
        before = [w.detach().clone() for w in weights]
        projected = {f"t{i}": w.detach().clone() * masks[f"t{i}"] for i, w in enumerate(weights)}
        n = dsl.budget // (3 + update)
        expected = exchange_positions(projected, masks, {k: a.clone() for k, a in dsl.grad_acc.items()}, n)
        moved = dsl._incremental_update(n)
        assert moved == sum(int(g.numel()) for _, g in expected.values()) > 0
        for i, w in enumerate(weights):
            name = f"t{i}"
            new = masks[name].clone()
            pruned, grown = expected[name]
            new.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
            assert torch.equal(dsl.masks[name], new), (update, name)
            assert int(torch.count_nonzero(w[~new])) == 0  # projected, pruned and grown weights at zero
            assert torch.equal(w[new & masks[name]], projected[name][new & masks[name]])  # survivors untouched
            untouched = torch.ones(w.shape[0], dtype=torch.bool)
            untouched[ids[i]] = False
            assert torch.equal(w[untouched] != 0, (before[i][untouched] != 0) & new[untouched])
    # passes over whole tables: the first update and the one that looked up most rows (update 2);
    # a small cache runs out and is rebuilt on others too
    assert dsl.full_scans == 2 if factor == 50 else 2 <= dsl.full_scans <= 8

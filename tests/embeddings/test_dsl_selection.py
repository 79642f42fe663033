"""DSL update pass at scale: exact threshold selection (sampled bracket + exact correction) against a
full sort, candidate-only prune/grow against a sort-based reference, and seeded sub-sampled
gradient accumulation (`grad_steps`)."""

from __future__ import annotations

import torch
from torchrec import KeyedJaggedTensor

from embeddings.dsl import remask as dsl_module
from embeddings.config import DSLConfig
from embeddings.dsl import DSLController, sampled_steps
from embeddings.dsl.masks import exchange_positions, kth_value, pick
from tests.embeddings.cpu_tbe import cpu_tbe


def _sorted_kth(values: torch.Tensor, k: int) -> float:
    return float(torch.sort(values).values[k - 1])


def test_kth_value_equals_the_sorted_entry_with_and_without_the_sampled_bracket(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    full_calls = []
    real = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda v, k: full_calls.append(v.numel()) or real(v, k))
    for trial in range(30):
        n = int(torch.randint(5000, 20000, (1,), generator=gen))
        scale = 3.0 if trial % 2 else 200.0  # coarse rounding: many ties
        v = torch.round(torch.randn(n, generator=gen) * scale)
        for k in (1, 2, n // 3, n // 2, n - 1, n):
            full_calls.clear()
            assert float(kth_value(v, k, sample=1024)) == _sorted_kth(v, k), (trial, k)
            assert n not in full_calls  # answered from the bracket, never a k-th value of everything
    # a sample that misses the k-th value completely (every sampled entry is 0, the rest 1): detected, exact
    v = torch.ones(20000)
    v[::20000 // 1024] = 0.0
    full_calls.clear()
    assert float(kth_value(v, 10, sample=1024)) == 0.0 and 20000 not in full_calls
    assert float(kth_value(v, 10000, sample=1024)) == 1.0 and 20000 in full_calls


def test_pick_takes_exactly_n_and_breaks_ties_by_lower_position():
    v = torch.tensor([2.0, 1.0, 2.0, 2.0, 0.0, 2.0])
    assert pick(v, 2, largest=True).tolist() == [True, False, True, False, False, False]
    assert pick(v, 3, largest=False).tolist() == [True, True, False, False, True, False]
    big = torch.round(torch.rand(5000, generator=torch.Generator().manual_seed(1)) * 7)
    for n in (0, 1, 100, 2500, 4999, 5000):
        got = pick(big, n, largest=True, sample=16)
        ref = torch.zeros(5000, dtype=torch.bool)
        ref[sorted(range(5000), key=lambda i: (-float(big[i]), i))[:n]] = True
        assert torch.equal(got, ref), n


def _reference_exchange(w: dict, m: dict, g: dict, n: int) -> dict:
    """Sort-based prune/grow: grow the n inactive weights of largest non-zero accumulated gradient
    (fewer when fewer have one), prune as many active weights of smallest |w|; ties to the lower
    (table, flat position)."""
    names = list(m)
    active = [(float(w[t].reshape(-1)[i].abs()), k, i) for k, t in enumerate(names)
              for i in m[t].reshape(-1).nonzero().squeeze(1).tolist()]
    inactive = [(-float(g[t].reshape(-1)[i]), k, i) for k, t in enumerate(names)
                for i in (~m[t]).reshape(-1).nonzero().squeeze(1).tolist() if float(g[t].reshape(-1)[i]) > 0]
    n = min(n, len(active), len(inactive))
    out = {t: (set(), set()) for t in names}
    for _, k, i in sorted(active)[:n]:
        out[names[k]][0].add(i)
    for _, k, i in sorted(inactive)[:n]:
        out[names[k]][1].add(i)
    return out


def test_exchange_positions_match_a_sort_based_reference_across_tables(monkeypatch):
    from embeddings.dsl import masks

    thresholds = []
    real = masks._grow_candidates
    monkeypatch.setattr(masks, "_grow_candidates", lambda a, m, above: thresholds.append(above) or real(a, m, above))
    for trial in range(8):
        gen = torch.Generator().manual_seed(10 + trial)
        w, m, g = {}, {}, {}
        for t, (rows, dim) in enumerate([(120, 8), (70, 4), (40, 12)][: 1 + trial % 3]):
            mask = torch.rand(rows, dim, generator=gen) < 0.3
            weight = torch.round(torch.randn(rows, dim, generator=gen) * 4) / 4 * mask  # ties and active zeros
            hot_rows = torch.rand(rows, 1, generator=gen) < (0.5 if trial % 2 else 0.03)  # few gradients: fewer move
            grad = torch.round(torch.rand(rows, dim, generator=gen) * 8) * hot_rows
            w[f"t{t}"], m[f"t{t}"], g[f"t{t}"] = weight, mask, grad
        n_active = sum(int(x.sum()) for x in m.values())
        for n in (1, n_active // 7, n_active // 2, n_active):
            ref = _reference_exchange(w, m, g, n)
            for sample in (64, 1 << 18):  # the sampled grow threshold and the plain path
                got = exchange_positions(w, m, g, n, sample=sample)
                for t in m:
                    pruned, grown = got[t]
                    assert set(pruned.tolist()) == ref[t][0] and pruned.numel() == len(ref[t][0]), (trial, n, t)
                    assert set(grown.tolist()) == ref[t][1] and grown.numel() == len(ref[t][1]), (trial, n, t)
    assert sum(t not in (None, 0.0) for t in thresholds) >= 5  # the sampled threshold was used, not only the full ranking


def test_only_weights_with_gradient_evidence_are_grown_and_as_many_are_pruned():
    w = {"a": torch.tensor([[0.5, 0.1, 0.0, 0.0]]), "b": torch.tensor([[0.3, 0.0], [0.0, 0.0]])}
    m = {"a": torch.tensor([[True, True, False, False]]), "b": torch.tensor([[True, False], [False, False]])}
    g = {"a": torch.tensor([[0.0, 0.0, 0.0, 2.0]]), "b": torch.zeros(2, 2)}  # one inactive weight with evidence
    got = exchange_positions(w, m, g, 3)
    assert {t: (p.tolist(), q.tolist()) for t, (p, q) in got.items()} == {"a": ([1], [3]), "b": ([], [])}
    none = exchange_positions(w, m, {t: torch.zeros_like(x) for t, x in g.items()}, 3)
    assert all(p.numel() == 0 and q.numel() == 0 for p, q in none.values())


def test_sampled_steps_put_one_step_in_each_part_seeded_per_interval():
    a = sampled_steps(0, 100, 4, seed=7, interval=0)
    assert sorted(s // 25 for s in a) == [0, 1, 2, 3]
    assert a == sampled_steps(0, 100, 4, seed=7, interval=0)
    draws = {sampled_steps(0, 100, 4, seed=7, interval=i) for i in range(6)}
    assert len(draws) > 1  # re-drawn each interval
    window = sampled_steps(60, 40, 2, seed=0, interval=3)
    assert sorted(s // 20 for s in window) == [3, 4]  # both inside the window [60, 100), one per half


def test_grad_steps_accumulate_on_k_steps_spread_over_each_interval():
    tbe = cpu_tbe([(30, 4)], optimizer="sgd", lr=0.0, init=None)
    cfg = DSLConfig(enabled=True, density=0.5, update_every=10, grad_steps=3, initial_exchange=0.1,
                    end_fraction=1.0, init="random")
    dsl = DSLController(tbe, cfg, total_steps=1000, seed=3)
    ids = torch.tensor([1, 2, 3])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=ids, lengths=torch.tensor([2, 1]))
    accumulated = []
    for step in range(20):
        pooled = tbe(ids, kjt.offsets())
        dsl.observe(kjt, pooled)
        before = float(dsl.grad_acc["t0"].sum())
        pooled.sum().backward()  # lr 0: the same gradient (|1| on rows 1..3) every step
        if float(dsl.grad_acc["t0"].sum()) > before:
            accumulated.append(step)
        dsl.after_step(step)
    first, second = [s for s in accumulated if s < 10], [s % 10 for s in accumulated if s >= 10]
    assert [(s >= 3) + (s >= 6) for s in first] == [0, 1, 2]  # one step in each part [0,3), [3,6), [6,10)
    assert len(second) == 3 and sorted(first) == sorted(sampled_steps(0, 10, 3, seed=3, interval=0))
    assert sorted(second) == sorted(sampled_steps(0, 10, 3, seed=3, interval=1))


def test_chunked_remask_of_a_tbe_keeps_the_budget_at_every_step(monkeypatch):
    monkeypatch.setattr(dsl_module, "_REMASK_CHUNK_BYTES", 64)  # 4 rows of 4 floats per chunk
    # table 0 is much larger than its ids per batch (rows made unique by sorting), table 1 is not (row bitmap)
    tbe = cpu_tbe([(500, 4), (30, 8)], lr=0.2)
    dsl = DSLController(tbe, DSLConfig(enabled=True, density=0.3, update_every=4, grad_steps=2, initial_exchange=0.5,
                                       end_fraction=0.9, init="random"), total_steps=60)
    gen = torch.Generator().manual_seed(2)
    exchanged = 0
    for step in range(60):
        a = (torch.rand(24, generator=gen) ** 2 * 500).long()
        b = (torch.rand(12, generator=gen) * 30).long()
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x", "y"], values=torch.cat([a, b]),
                                                  lengths=torch.cat([torch.full((6,), 4), torch.full((6,), 2)]))
        before = {k: v.clone() for k, v in dsl.masks.items()}
        pooled = tbe(kjt.values(), kjt.offsets())
        dsl.observe(kjt, pooled)
        pooled.pow(2).sum().backward()
        stats = dsl.after_step(step)
        exchanged += stats["exchanged"]
        assert dsl.active_weights() == dsl.budget
        for i, w in enumerate(tbe.split_embedding_weights()):
            mask = dsl.masks[f"t{i}"]
            assert int(torch.count_nonzero(w[~mask])) == 0, (step, i)
            if stats["updated"]:
                assert torch.all(w[mask & ~before[f"t{i}"]] == 0)  # regrown at zero
    assert exchanged > dsl.budget // 2

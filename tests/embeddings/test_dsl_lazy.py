"""Lazy DSL (dsl.mode: lazy): a step between updates is the plain FBGEMM step (no hook, no mask, no
batch kept); every update finds the rows looked up from the row-wise optimizer state, grows the
inactive weights that trained furthest (keeping their values), prunes the smallest active ones,
zeroes the rest (the budget holds at updates and at the end, not between), and the final exact
phase ends within the budget."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from embeddings.config import DSLConfig
from embeddings.dsl import LazyDSLController, make_controller
from embeddings.dsl import lazy_fused, lazy_kernels
from embeddings.dsl.masks import exchange_positions
from tests.embeddings.cpu_tbe import cpu_tbe

# the update through the fused numba kernels (CPU float32 tables), and through torch ops (CUDA, other dtypes)
PATHS = [pytest.param(True, id="fused"), pytest.param(False, id="torch")]


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


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sgd"])
def test_budget_holds_at_every_update_and_at_the_end_not_between(optimizer, fused):
    tbe = cpu_tbe([(50, 4), (30, 8)], optimizer)
    cfg = DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=4, initial_exchange=0.5, end_fraction=0.9,
                    init="random")
    dsl = make_controller(tbe, cfg, total_steps=40)
    dsl.fused = fused
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
            drifted_between += off  # one-id and multi-id bags drift alike: nothing masks a step
        assert dsl.active_weights() == dsl.budget == sum(int(m.sum()) for m in dsl.masks.values())
    assert drifted_between > 0 and exchanged > 0
    nonzero = sum(int(torch.count_nonzero(w)) for w in tbe.split_embedding_weights())
    assert 0 < nonzero <= dsl.budget


@pytest.mark.parametrize("fused", PATHS)
def test_the_first_update_reports_the_active_weights_it_leaves(fused):
    """The active count is taken before the first exchange writes the masks (it was taken after, and
    the exchange then added to it again: 155 reported for a budget of 168)."""
    tbe = cpu_tbe([(60, 4), (40, 8)])
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=3, initial_exchange=0.4,
                                           init="random"), total_steps=45)
    dsl.fused = fused
    gen = torch.Generator().manual_seed(7)
    for step in range(3):
        stats = _step(tbe, dsl, _kjt(gen, torch.randint(0, 4, (8,), generator=gen)), step)
    assert stats["updated"] and stats["exchanged"] == 66
    assert stats["active"] == dsl.budget == sum(int(m.sum()) for m in dsl.masks.values()) == 168
    assert stats["density"] == {name: int(m.sum()) / m.numel() for name, m in dsl.masks.items()}


def test_a_step_between_updates_is_the_plain_step():
    """No hook and no reference to the batch; the weights after each step are those of a plain TBE
    trained from the same (projected) weights on the same batches."""
    lazy_tbe, plain = cpu_tbe([(50, 4), (30, 8)]), cpu_tbe([(50, 4), (30, 8)])
    dsl = LazyDSLController(lazy_tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=10, init="random"),
                            total_steps=40)
    with torch.no_grad():
        for a, b in zip(plain.split_embedding_weights(), lazy_tbe.split_embedding_weights()):
            a.copy_(b)
    gen = torch.Generator().manual_seed(3)
    for step in range(9):
        kjt = _kjt(gen, torch.full((8,), 2))
        pooled = lazy_tbe(kjt.values(), kjt.offsets())
        dsl.observe(kjt, pooled)
        assert not pooled._backward_hooks
        (pooled - 0.5).pow(2).sum().backward()
        assert dsl.after_step(step)["updated"] is False
        ref = plain(kjt.values(), kjt.offsets())
        (ref - 0.5).pow(2).sum().backward()
        assert all(torch.equal(a, b) for a, b in zip(plain.split_embedding_weights(), lazy_tbe.split_embedding_weights()))
    assert sum(int(torch.count_nonzero(w[~dsl.masks[f"t{i}"]])) for i, w in enumerate(lazy_tbe.split_embedding_weights())) > 0
    assert not hasattr(dsl, "_batches")


def test_changed_rows_are_read_off_the_rowwise_optimizer_state():
    tbe = cpu_tbe([(50, 4), (30, 8)])
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=100, init="random"),
                            total_steps=400)
    weights = {f"t{i}": w for i, w in enumerate(tbe.split_embedding_weights())}
    assert dsl._changed_rows(weights) == {"t0": None, "t1": None}  # no snapshot yet: whole tables
    dsl._snapshot_row_state()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x", "y"], values=torch.tensor([7, 3, 7, 12, 29, 4]),
                                              lengths=torch.tensor([1, 2, 0, 2, 1, 0]))
    pooled = tbe(kjt.values(), kjt.offsets())
    pooled.sum().backward()
    rows = dsl._changed_rows(weights)
    assert rows["t0"].tolist() == [3, 7] and rows["t1"].tolist() == [4, 12, 29]


@pytest.mark.parametrize("fused", PATHS)
def test_growth_picks_the_weights_that_trained_furthest_and_keeps_their_values(fused):
    """Planted drift: three inactive weights moved far, the rest a little; the update grows exactly
    those three with their values, prunes the three smallest active weights, zeroes the other
    inactive weights and leaves every other active weight as it was."""
    tbe = cpu_tbe([(40, 4), (20, 8)], "sgd")
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.25, init="random"), total_steps=100)
    dsl.fused = fused
    w0, w1 = tbe.split_embedding_weights()
    m0, m1 = dsl.masks["t0"], dsl.masks["t1"]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for w, m in ((w0, m0), (w1, m1)):
            w[m] = 0.5 + torch.rand(int(m.sum()), generator=gen)  # active: |w| in [0.5, 1.5)
            w[~m] = (torch.rand(int((~m).sum()), generator=gen) - 0.5) * 0.02  # inactive drift |w| < 0.01
        planted = [(0, int(torch.nonzero(~m0.view(-1))[5])), (1, int(torch.nonzero(~m1.view(-1))[0])),
                   (1, int(torch.nonzero(~m1.view(-1))[40]))]
        for (t, p), v in zip(planted, (0.9, -0.7, 0.4)):
            (w0, w1)[t].view(-1)[p] = v
        small = [(0, int(torch.nonzero(m0.view(-1))[2])), (1, int(torch.nonzero(m1.view(-1))[3])),
                 (1, int(torch.nonzero(m1.view(-1))[9]))]
        for (t, p), v in zip(small, (0.1, -0.2, 0.05)):
            (w0, w1)[t].view(-1)[p] = v
    before = [w0.clone(), w1.clone()]
    masks = [m0.clone(), m1.clone()]
    assert dsl._update(3) == 3
    for t, p in planted:
        assert bool(dsl.masks[f"t{t}"].view(-1)[p]) and float((w0, w1)[t].view(-1)[p]) == float(before[t].view(-1)[p])
    for t, p in small:
        assert not bool(dsl.masks[f"t{t}"].view(-1)[p]) and float((w0, w1)[t].view(-1)[p]) == 0.0
    for t, (w, m) in enumerate(((w0, m0), (w1, m1))):
        assert int(torch.count_nonzero(w[~m])) == 0
        kept = masks[t] & m
        assert torch.equal(w[kept], before[t][kept])
    assert dsl.active_weights() == dsl.budget == int(m0.sum() + m1.sum())


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("factor", [0.5, 2.0, 50.0])  # cache rebuilt at most updates, some, (nearly) never
def test_update_over_changed_rows_chooses_what_the_whole_table_rule_chooses(monkeypatch, factor, fused):
    """Four updates in a row on one controller (the prune cache carried across them): each time some
    rows are looked up (their weights change, inactive ones drift; the row-wise state moves with
    them). The masks after the update are the whole-table rule's choice (grow the n inactive
    weights of largest |w|, prune the n active ones of smallest |w|, ties to the lower (table,
    position)); grown weights keep their values, rows not looked up keep theirs, every inactive
    weight is zero."""
    import embeddings.dsl.lazy as lazy_module

    monkeypatch.setattr(lazy_module, "_CACHE_FACTOR", factor)
    monkeypatch.setattr(lazy_fused, "CACHE_FACTOR", factor)
    monkeypatch.setattr(lazy_module, "_PASS_CHUNK_BYTES", 256)  # many chunks per table
    monkeypatch.setattr(lazy_fused.Buffer.__init__, "__defaults__", (8,))  # buffers fill mid-pass and grow
    tbe = cpu_tbe([(120, 8), (70, 4), (40, 12)])
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, init="random"), total_steps=100)
    dsl.fused = fused
    assert lazy_fused.fusable(dsl, dict(zip(dsl.masks, tbe.split_embedding_weights()))) == (fused and lazy_fused.available())
    weights = tbe.split_embedding_weights()
    states = [s[0] for s in tbe.split_optimizer_states()]
    gen = torch.Generator().manual_seed(20)
    for update in range(4):
        ids = []
        with torch.no_grad():
            for i, w in enumerate(weights):
                looked = (torch.rand(w.shape[0], generator=gen) < (0.9 if update == 2 else 0.2)).nonzero().squeeze(1)
                w[looked] = torch.round(torch.randn(looked.numel(), w.shape[1], generator=gen) * 4) / 4  # ties, drift
                states[i][looked] += 1.0
                ids.append(looked)
        masks = {k: m.clone() for k, m in dsl.masks.items()}
        before = [w.detach().clone() for w in weights]
        evidence = {f"t{i}": w.abs() * ~masks[f"t{i}"] for i, w in enumerate(before)}
        n = dsl.budget // (3 + update)
        expected = exchange_positions({k: before[i] for i, k in enumerate(masks)}, masks, evidence, n)
        moved = dsl._update(n)
        assert moved == sum(int(g.numel()) for _, g in expected.values()) > 0
        for i, w in enumerate(weights):
            name = f"t{i}"
            new = masks[name].clone()
            pruned, grown = expected[name]
            new.view(-1).index_fill_(0, pruned, False).index_fill_(0, grown, True)
            assert torch.equal(dsl.masks[name], new), (update, name)
            assert int(torch.count_nonzero(w[~new])) == 0
            assert torch.equal(w[new], before[i][new])  # survivors and grown weights keep their values
            untouched = torch.ones(w.shape[0], dtype=torch.bool)
            untouched[ids[i]] = False
            assert torch.equal(w[untouched] != 0, (before[i][untouched] != 0) & new[untouched])
    # passes over whole tables: the first update and the one that looked up most rows (update 2);
    # a small cache runs out and is rebuilt on others too
    assert dsl.full_scans == 2 if factor == 50 else 2 <= dsl.full_scans <= 8


def test_sharded_or_dense_tables_take_the_whole_table_rule():
    """An EmbeddingBagCollection trained by a torch optimizer (no fused state): the update ranks whole
    tables, grows the drifted weight with its value and zeroes every other inactive weight."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig

    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=6, feature_names=["f"])])
    dsl = LazyDSLController(ebc, DSLConfig(enabled=True, mode="lazy", density=0.5, init="random"), total_steps=10)
    w, m = ebc.embedding_bags["t"].weight, dsl.masks["t"]
    assert dsl._whole_tables() is None  # a dense optimizer trains it
    with torch.no_grad():
        w[m] = torch.arange(1, 13, dtype=torch.float32) / 10  # active: 0.1 .. 1.2
        w[~m] = 0.001
        far = int(torch.nonzero(~m.view(-1))[4])
        w.view(-1)[far] = -2.0
        smallest = int(torch.nonzero(m.view(-1))[0])
    assert dsl._update(1) == 1
    assert bool(m.view(-1)[far]) and float(w.view(-1)[far]) == -2.0
    assert not bool(m.view(-1)[smallest]) and float(w.view(-1)[smallest]) == 0.0
    assert int(torch.count_nonzero(w[~m])) == 0 and int(m.sum()) == dsl.budget == 12


@pytest.mark.skipif(not lazy_fused.available(), reason="numba not installed: only the torch-op path exists")
def test_fused_and_torch_updates_train_the_same_model(monkeypatch):
    """Two identical TBEs trained on the same batches (one-id and multi-id bags, weights rounded to a
    grid so |w| ties are common), one controller updating through the fused kernels, one through
    torch ops: after every step the weights, masks and counters are equal, and each prune cache holds
    exactly the active weights up to its bound."""
    monkeypatch.setattr(lazy_fused.Buffer.__init__, "__defaults__", (8,))
    monkeypatch.setattr(lazy_fused, "STREAM_SHARE", 0.3)  # whole-table passes where the torch path walks row lists
    tables = [(60, 4), (40, 8), (12, 72), (10, 20)]  # 72: wider than the kernel's 64-column block; 20: 16 + a tail
    tbes = [cpu_tbe(tables), cpu_tbe(tables)]
    cfg = DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=3, initial_exchange=0.4, end_fraction=0.8,
                    init="random")
    ctrls = [make_controller(t, cfg, total_steps=45) for t in tbes]
    ctrls[1].fused = False
    lazy_kernels.warm()
    kernels = [getattr(lazy_kernels, k) for k in lazy_kernels.__all__ if hasattr(getattr(lazy_kernels, k), "signatures")]
    compiled = [len(k.signatures) for k in kernels]
    gen = torch.Generator().manual_seed(7)
    for step in range(45):
        two = _kjt(gen, torch.randint(0, 4, (8,), generator=gen))
        wide = [torch.randint(0, rows, (8,), generator=gen) for rows, _ in tables[2:]]
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x", "y", "z", "v"], values=torch.cat([two.values(), *wide]),
                                                  lengths=torch.cat([two.lengths(), torch.ones(16, dtype=torch.long)]))
        stats = [_step(tbe, dsl, kjt, step) for tbe, dsl in zip(tbes, ctrls)]
        assert stats[0] == stats[1], step
        for a, b in zip(tbes[0].split_embedding_weights(), tbes[1].split_embedding_weights()):
            assert torch.equal(a, b), step
        for name in ctrls[0].masks:
            assert torch.equal(ctrls[0].masks[name], ctrls[1].masks[name]), (step, name)
        for dsl, tbe in zip(ctrls, tbes):  # right after an update, each path's prune cache: the active |w| <= its bound
            if not stats[0]["updated"] or dsl._cache is None or dsl._exact_phase():
                continue
            for (name, entry), w in zip(dsl._cache.items(), tbe.split_embedding_weights()):
                pos, val = ((torch.from_numpy(entry.pos[:entry.n]), torch.from_numpy(entry.val[:entry.n]))
                            if isinstance(entry, lazy_fused.Buffer) else entry)
                want = (dsl.masks[name] & (w.abs() <= dsl._bound)).view(-1).nonzero().squeeze(1)
                assert torch.equal(pos.sort().values, want), (step, name, dsl.fused)
                assert torch.equal(val[pos.argsort()], w.view(-1)[want].abs()), (step, name, dsl.fused)
        with torch.no_grad():  # both onto a coarse grid: many equal |w|; a row it moves counts as looked up
            for tbe in tbes:
                for w, (state,) in zip(tbe.split_embedding_weights(), tbe.split_optimizer_states()):
                    grid = torch.round(w * 64) / 64
                    state[(grid != w).any(1)] += 1.0
                    w.copy_(grid)
    assert ctrls[0].full_scans >= 2 and ctrls[1].full_scans >= 2 and ctrls[0].updates == ctrls[1].updates > 5
    assert ctrls[0].exchanged_total == ctrls[1].exchanged_total > 0
    assert len(kernels) == 7 and [len(k.signatures) for k in kernels] == compiled  # warm() compiled what updates call


def test_without_numba_the_update_runs_in_torch_ops():
    """numba is optional: with it blocked, the kernels module imports (its functions are plain Python,
    its doctest holds), `available()` is False, and a lazy controller on a CPU TBE updates through torch ops."""
    import subprocess
    import sys

    code = """
import sys, doctest
sys.modules["numba"] = None  # import numba -> ImportError
import torch
from embeddings.dsl import lazy_fused, lazy_kernels
from embeddings.config import DSLConfig
from embeddings.dsl import LazyDSLController
from tests.embeddings.cpu_tbe import cpu_tbe
assert not lazy_kernels.available() and doctest.testmod(lazy_kernels).failed == 0
tbe = cpu_tbe([(40, 4)])
dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.25, update_every=3, init="random"), total_steps=30)
assert not lazy_fused.fusable(dsl, {"t0": tbe.split_embedding_weights()[0]})
for step in range(3):
    tbe(torch.arange(40), torch.arange(0, 41, 4)).pow(2).sum().backward()
    stats = dsl.after_step(step)
assert stats["exchanged"] > 0 and isinstance(dsl._cache["t0"], tuple) and stats["active"] == dsl.budget == 40
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only: the torch-op update on CUDA tables")
def test_cuda_tables_take_the_torch_op_update():
    """No numba kernel touches a CUDA tensor: the update runs in torch ops there, and the budget holds."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)

    tbe = SplitTableBatchedEmbeddingBagsCodegen([(50, 8, EmbeddingLocation.DEVICE, ComputeDevice.CUDA)],
                                                optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.1,
                                                device=torch.device("cuda"))
    dsl = LazyDSLController(tbe, DSLConfig(enabled=True, mode="lazy", density=0.3, update_every=3, initial_exchange=0.4,
                                           init="random"), total_steps=30)
    weights = {"t0": tbe.split_embedding_weights()[0]}
    assert not lazy_fused.fusable(dsl, weights)
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        ids = torch.randint(0, 50, (16,), generator=gen).cuda()
        tbe(ids, torch.arange(0, 17, 2, device="cuda")).pow(2).sum().backward()
        stats = dsl.after_step(step)
    assert stats["updated"] and stats["exchanged"] > 0 and stats["active"] == dsl.budget
    w, m = weights["t0"], dsl.masks["t0"]
    assert int(torch.count_nonzero(w[~m])) == 0 and int(m.sum()) == dsl.budget

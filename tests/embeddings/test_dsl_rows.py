"""Row-structured DSL (dsl.mode: row): the physical table holds only the budget's rows, inactive ids
read a zero sentinel row, rows move by gradient evidence and weight norm, and the export is the
compact table as it trained."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from embeddings.compression.base import row_bytes
from embeddings.config import DSLConfig, EmbeddingsConfig
from embeddings.dsl import RowDSLController, attach, make_controller
from embeddings.dsl.rows import apply_remap, initial_remap, row_budget
from embeddings.dsl.tables import DSLError
from embeddings.export import export_embeddings, load_exported
from embeddings.planner import plan_embeddings
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import PlanEmbeddings
from tests.embeddings.cpu_tbe import cpu_tbe


def _plan(rows: int = 50, kept: int = 10, dim: int = 4) -> EmbeddingPlan:
    return EmbeddingPlan([TableSpec("t_a", ["a"], rows=rows, dim=dim, method="pruned", params={"rows_kept": kept},
                                    dsl_density=kept / rows),
                          TableSpec("t_b", ["b"], rows=30, dim=dim)])


def _batch(gen: torch.Generator, n: int = 16) -> KeyedJaggedTensor:
    a = (torch.rand(n, generator=gen) ** 2 * 50).long()
    b = torch.randint(0, 30, (n,), generator=gen)
    return KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([a, b]),
                                               lengths=torch.ones(2 * n, dtype=torch.long))


def _train(emb, ctl, steps: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    stats = []
    for step in range(steps):
        out = emb(_batch(gen))
        (out.values() - 1).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        stats.append(ctl.after_step(step))
    return stats


def test_physical_table_holds_only_the_budget_rows_and_inactive_ids_read_zeros():
    emb = PlanEmbeddings(_plan())
    ctl = make_controller(emb, DSLConfig(enabled=True, mode="row", density=0.2, init="random", update_every=5,
                                         initial_exchange=0.5, grad_steps=5), total_steps=40)
    assert isinstance(ctl, RowDSLController) and attach(emb, ctl) is emb
    weight = emb.ebc.embedding_bags["t_a"].weight.detach()
    assert tuple(weight.shape) == (11, 4)  # 10 kept rows + the zero sentinel
    stats = _train(emb, ctl, 40)
    moved = [s["rows_exchanged"] for s in stats if s["updated"]]
    assert sum(moved) > 0 and moved[-1] == 0  # rows moved early; none after end_fraction
    remap, slots = emb.row_remaps.t_a, ctl.tables["t_a"].slots
    active = (remap < 10).nonzero().squeeze(1)
    assert active.numel() == 10 == ctl.active_rows() and ctl.active_weights() == ctl.budget == 40
    assert sorted(remap[active].tolist()) == list(range(10))  # one virtual row per physical slot
    assert torch.equal(slots[remap[active].long()], active)
    assert float(weight[10].abs().sum()) == 0.0  # the sentinel stays zero
    emb.eval()
    inactive = int((remap == 10).nonzero()[0])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([inactive, int(active[0]), 0, 0]),
                                              lengths=torch.ones(4, dtype=torch.long))
    out = emb(kjt).to_dict()["a"]
    assert float(out[0].abs().sum()) == 0.0 and torch.equal(out[1], weight[int(remap[active[0]])].detach())


@pytest.mark.parametrize("grow_init", ["zero", "sentinel", "uniform"])
def test_exchange_grows_evidence_rows_into_smallest_norm_slots_with_fresh_state(monkeypatch, grow_init):
    monkeypatch.setattr(RowDSLController, "grow_init", grow_init)
    tbe = cpu_tbe([(9, 4)], "rowwise_adagrad")  # 8 physical rows... of which the last is the sentinel
    remap = initial_remap(20, 8)
    ctl = RowDSLController(tbe, DSLConfig(enabled=True, mode="row", init="random", update_every=1, initial_exchange=0.25,
                                          end_fraction=1.0), total_steps=100, remaps={"t0": remap}, seed=3)
    ctl._evidence_ids = None  # evidence written below, not by the hook: the exchange scans it
    slots = ctl.tables["t0"].slots.clone()
    weight = tbe.split_embedding_weights()[0]
    state = tbe.split_optimizer_states()[0][0]
    with torch.no_grad():
        weight[:8] = torch.arange(1, 9, dtype=torch.float32).unsqueeze(1).repeat(1, 4)
        weight[int(remap[slots[5]])] = 0.01   # the two smallest rows by norm
        weight[int(remap[slots[2]])] = 0.02
        state.fill_(7.0)
    inactive = [v for v in range(20) if v not in set(slots.tolist())]
    ctl.grad_acc["t0"][inactive[4]] = 5.0     # evidence on two inactive rows
    ctl.grad_acc["t0"][inactive[1]] = 3.0
    ctl.grad_acc["t0"][slots[0]] = 99.0       # active rows are no candidates
    n_sched = round(0.25 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 100)).item()) * 8)
    assert n_sched == 2
    freed = {int(remap[slots[5]]), int(remap[slots[2]])}
    moved = ctl._exchange(0.25 * 0.5 * (1 + float(torch.cos(torch.tensor(torch.pi / 100)))))
    assert moved == {"t0": 2}
    assert {int(remap[inactive[4]]), int(remap[inactive[1]])} == freed
    assert int(remap[slots[5]]) == 8 and int(remap[slots[2]]) == 8  # pruned ids read the sentinel
    bound = ctl.tables["t0"].init_bound
    for p in freed:
        if grow_init != "uniform":  # zero, or the (zero) row its ids read while inactive: the exchange leaves their outputs as they were
            assert float(weight[p].abs().sum()) == 0.0
        else:
            assert float(weight[p].abs().max()) <= bound and float(weight[p].abs().sum()) > 0  # fresh init
        assert float(state[p]) == 0.0                                                           # fresh state
    assert float(state[int(remap[slots[1]])]) == 7.0 and float(weight[8].abs().sum()) == 0.0


def test_no_evidence_no_exchange_and_frequency_init_keeps_the_most_frequent_ids():
    tbe = cpu_tbe([(4, 4)])
    remap = initial_remap(6, 3)
    counts = torch.tensor([5.0, 0.0, 9.0, 1.0, 9.0, 2.0])
    ctl = RowDSLController(tbe, DSLConfig(enabled=True, mode="row", update_every=1), total_steps=10,
                           remaps={"t0": remap}, frequencies={"t0": counts})
    assert sorted((remap < 3).nonzero().squeeze(1).tolist()) == [0, 2, 4]
    assert ctl._exchange(0.5) == {}
    with pytest.raises(DSLError, match="init: random"):
        RowDSLController(cpu_tbe([(4, 4)]), DSLConfig(enabled=True, mode="row"), total_steps=10,
                         remaps={"t0": initial_remap(6, 3)})


def test_row_mode_checkpoint_round_trip_restores_the_remap():
    emb = PlanEmbeddings(_plan())
    cfg = DSLConfig(enabled=True, mode="row", density=0.2, init="random", update_every=5, initial_exchange=0.5, grad_steps=5)
    ctl = make_controller(emb, cfg, total_steps=40)
    attach(emb, ctl)
    _train(emb, ctl, 12)
    saved = ctl.state_dict()
    other = PlanEmbeddings(_plan())
    ctl2 = make_controller(other, cfg, total_steps=40, seed=5)
    ctl2.load_state_dict(saved)
    assert torch.equal(other.row_remaps.t_a, emb.row_remaps.t_a)
    assert torch.equal(ctl2.tables["t_a"].slots, ctl.tables["t_a"].slots) and ctl2.updates == 2


@pytest.mark.parametrize("sentinel", ["zero", "learned"])
def test_export_is_the_compact_table_and_serves_the_trained_outputs(monkeypatch, sentinel):
    """A learned sentinel trains as one shared row for the inactive ids and is exported with the table
    (one row more); a zero one is not stored (inactive ids map to -1)."""
    monkeypatch.setattr(RowDSLController, "sentinel", sentinel)
    emb = PlanEmbeddings(_plan(rows=200, kept=40, dim=16))
    ctl = make_controller(emb, DSLConfig(enabled=True, mode="row", density=0.2, init="random", update_every=5,
                                         grad_steps=5), total_steps=20)
    attach(emb, ctl)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(emb.parameters(), lr=0.01)  # a learned sentinel takes the summed gradient of every inactive id
    for step in range(20):
        a = torch.randint(0, 200, (32,), generator=gen)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([a, a % 30]),
                                                  lengths=torch.ones(64, dtype=torch.long))
        (emb(kjt).values() - 1).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        ctl.after_step(step)
    sentinel_row = emb.ebc.embedding_bags["t_a"].weight.detach()[40]
    assert bool(sentinel_row.any()) == (sentinel == "learned")
    path = f"/tmp/sparserec_test_row_export_{sentinel}.pt"
    report = export_embeddings(emb, path)
    t_a = report["tables"][0]
    stored = 41 if sentinel == "learned" else 40
    assert t_a["bytes_after"] == stored * row_bytes(16, "fp16") + 200 * 4  # kept rows in fp16 + the int32 remap
    assert t_a["bytes_after"] / t_a["dense_fp32_bytes"] <= 0.25
    served = load_exported(path)
    emb.eval()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([torch.arange(200), torch.arange(200) % 30]),
                                              lengths=torch.ones(400, dtype=torch.long))
    assert torch.allclose(served(kjt).values(), emb(kjt).values(), atol=2e-3)
    inactive = int((emb.row_remaps.t_a == 40).nonzero()[0])
    assert torch.allclose(served(kjt).to_dict()["a"][inactive], sentinel_row, atol=2e-3)


def test_planner_row_mode_gives_rows_kept_and_counts_the_compact_bytes():
    spec = [{"name": "user", "role": "categorical", "vocab_size": 1000, "score": 0.3, "selected": True}]
    cfg = EmbeddingsConfig(methods=["dense"], dsl=DSLConfig(enabled=True, mode="row", density=0.2))
    t = plan_embeddings(spec, cfg).tables[0]
    assert t.method == "pruned" and t.params["rows_kept"] == row_budget(0.2, 1000) == 200
    assert t.bytes == 201 * row_bytes(16, "fp16") + 1000 * 4
    exact = plan_embeddings(spec, EmbeddingsConfig(methods=["dense"], dsl=DSLConfig(enabled=True, density=0.2))).tables[0]
    assert "rows_kept" not in exact.params and exact.params["max_error"] == 0.05  # the compact export's bound


def test_apply_remap_keeps_the_id_dtype():
    remap = torch.tensor([2, 0, 1], dtype=torch.int32)
    assert apply_remap(remap, torch.tensor([0, 2], dtype=torch.int64)).dtype == torch.int64
    assert apply_remap(remap, torch.tensor([0, 2], dtype=torch.int32)).tolist() == [2, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the remap and sentinel on device)")
def test_row_mode_on_cuda_keeps_the_sentinel_zero():
    emb = PlanEmbeddings(_plan(), device=torch.device("cuda"))
    ctl = make_controller(emb, DSLConfig(enabled=True, mode="row", density=0.2, init="random", update_every=5,
                                         grad_steps=5), total_steps=20)
    attach(emb, ctl)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    for step in range(20):
        kjt = _batch(gen).to(torch.device("cuda"))
        (emb(kjt).values() - 1).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        ctl.after_step(step)
    assert float(emb.ebc.embedding_bags["t_a"].weight[10].abs().sum()) == 0.0 and ctl.active_rows() == 10


def test_row_mode_live_training_bytes_are_the_compact_tables():
    """Measured from the live tensors: row mode holds the budget's rows; exact holds the whole table,
    its mask and a table-sized accumulator."""
    tbe = cpu_tbe([(1001, 16)], "rowwise_adagrad")  # 1000 kept rows + the sentinel
    row = RowDSLController(tbe, DSLConfig(enabled=True, mode="row", init="random"), total_steps=10,
                           remaps={"t0": initial_remap(5000, 1000)})
    assert row.live_bytes() == 1001 * 16 * 4 + 1001 * 4 + 5000 * 4 + 5000 * 4  # weights, row state, remap, evidence
    full = cpu_tbe([(5000, 16)], "rowwise_adagrad")
    exact = make_controller(full, DSLConfig(enabled=True, density=0.2, init="random"), total_steps=10)
    assert exact.live_bytes() == 5000 * 16 * 4 + 5000 * 4 + 5000 * 16 + 5000 * 16 * 4
    assert row.live_bytes() < 0.25 * exact.live_bytes()


def test_planner_shares_one_global_row_budget_small_tables_whole():
    """density 0.2 per table would keep 1 of a 5-value feature's rows; the global budget keeps small
    tables whole (water-filling finds them) and the large ones share the rest in proportion to their
    rows, the total unchanged."""
    from embeddings.planner import share_rows

    spec = [{"name": "gender", "role": "categorical", "vocab_size": 5, "score": 0.2, "selected": True},
            {"name": "city", "role": "categorical", "vocab_size": 100, "score": 0.2, "selected": True},
            {"name": "user", "role": "categorical", "vocab_size": 2000, "score": 0.3, "selected": True},
            {"name": "item", "role": "categorical", "vocab_size": 8000, "score": 0.3, "selected": True}]
    cfg = EmbeddingsConfig(methods=["dense"], dsl=DSLConfig(enabled=True, mode="row", density=0.2))
    plan = plan_embeddings(spec, cfg)
    kept = {t.features[0]: t.params["rows_kept"] for t in plan.tables}
    rows = {t.features[0]: t.rows for t in plan.tables}
    total = sum(row_budget(0.2, r) for r in rows.values())
    left = total - rows["gender"] - rows["city"]
    user = round(left * rows["user"] / (rows["user"] + rows["item"]))
    assert kept == {"gender": rows["gender"], "city": rows["city"], "user": user, "item": left - user}, (kept, rows)
    assert abs(kept["item"] / rows["item"] - kept["user"] / rows["user"]) < 1e-3  # one density for the large tables
    assert sum(kept.values()) == total
    assert all(t.bytes == (t.params["rows_kept"] + 1) * row_bytes(16, "fp16") + t.rows * 4 for t in plan.tables)
    assert share_rows([4, 4, 4], 6) == [2, 2, 2] and share_rows([1, 50], 1000) == [1, 50]
    assert share_rows([1481, 752, 345, 74, 21, 23, 10, 4], 542) == [235, 120, 55, 74, 21, 23, 10, 4]  # ml-100k
    assert share_rows([2, 2, 1_000_000], 3) == [1, 1, 1]  # every table keeps a row, the total holds


def test_row_and_exact_share_the_step_clock_and_row_samples_ten_evidence_steps_per_interval():
    """One step bookkeeping for every mode (embeddings/dsl/steps.py): row accumulates on 10 seeded
    steps of each interval by default, exact on every step (lazy takes no evidence between updates)."""
    from embeddings.dsl.hooks import sampled_steps

    emb = PlanEmbeddings(_plan())
    modes = {"row": RowDSLController(emb, DSLConfig(enabled=True, mode="row", init="random", update_every=40),
                                     total_steps=200, seed=3),
             "exact": make_controller(cpu_tbe([(50, 4)]), DSLConfig(enabled=True, init="random", update_every=40),
                                      total_steps=200, seed=3)}
    for mode, ctl in modes.items():
        hits = []
        for step in range(80):
            hits.append(ctl._accumulates())
            stats, fraction = ctl.tick(step, ctl.budget)
            assert (fraction is not None) == ((step + 1) % 40 == 0) and stats["updated"] is False
        got = [sorted(s for s in range(40) if hits[40 * i + s]) for i in (0, 1)]
        want = [list(range(40))] * 2 if mode == "exact" else [sorted(sampled_steps(0, 40, 10, 3, i)) for i in (0, 1)]
        assert got == want, mode
        assert len(got[0]) == (40 if mode == "exact" else 10)


def test_grow_candidates_are_the_inactive_ids_the_sampled_steps_saw():
    """The hook keeps the ids of each sampled step; the exchange ranks those (inactive, with evidence)
    instead of scanning the vocabulary-sized evidence, and both give the same rows and values."""
    emb = PlanEmbeddings(_plan(rows=200, kept=20))
    ctl = make_controller(emb, DSLConfig(enabled=True, mode="row", density=0.1, init="random", update_every=50,
                                         grad_steps=50), total_steps=400)
    attach(emb, ctl)
    _train(emb, ctl, 30)
    t = ctl.tables["t_a"]
    seen = torch.unique(torch.cat(ctl._evidence_ids["t_a"]))
    rows, values = ctl._grow_candidates("t_a", t)
    assert rows.numel() > 0 and bool((t.remap[rows] == t.kept).all()) and bool((values > 0).all())
    assert set(rows.tolist()) <= set(seen.tolist())
    ctl._evidence_ids = None
    scanned, scanned_values = ctl._grow_candidates("t_a", t)
    assert torch.equal(rows, scanned) and torch.equal(values, scanned_values)


def test_a_grown_row_starts_as_the_learned_sentinel_its_ids_read():
    """With a learned sentinel the exchange leaves a grown id's output unchanged: its new row is the
    sentinel row it read while inactive, with zeroed optimizer state."""
    tbe = cpu_tbe([(9, 4)], "rowwise_adagrad")
    remap = initial_remap(20, 8)
    ctl = RowDSLController(tbe, DSLConfig(enabled=True, mode="row", init="random", update_every=1, initial_exchange=0.25,
                                          end_fraction=1.0), total_steps=100, remaps={"t0": remap}, seed=3)
    ctl.sentinel, ctl.grow_init = "learned", "sentinel"
    ctl._evidence_ids = None
    weight, state = tbe.split_embedding_weights()[0], tbe.split_optimizer_states()[0][0]
    with torch.no_grad():
        weight[:8] = torch.arange(1, 9, dtype=torch.float32).unsqueeze(1).repeat(1, 4)
        weight[8] = torch.tensor([0.5, -0.25, 0.125, 2.0])  # the trained sentinel
        state.fill_(7.0)
    slots = ctl.tables["t0"].slots.clone()
    grown = [v for v in range(20) if v not in set(slots.tolist())][3]
    ctl.grad_acc["t0"][grown] = 4.0
    assert ctl._exchange(0.125) == {"t0": 1}
    p = int(remap[grown])
    assert p == 0 and torch.equal(weight[p], torch.tensor([0.5, -0.25, 0.125, 2.0])) and float(state[p]) == 0.0
    assert torch.equal(weight[8], torch.tensor([0.5, -0.25, 0.125, 2.0]))  # the sentinel itself is left as trained


def test_update_stats_report_the_counts_the_remap_holds():
    """The update's `active` and `density` come from the invariant the exchange keeps (one virtual row
    per physical slot), without a pass over the remap: they equal the counts measured on it."""
    emb = PlanEmbeddings(_plan())
    ctl = make_controller(emb, DSLConfig(enabled=True, mode="row", density=0.2, init="random", update_every=5,
                                         initial_exchange=0.5, grad_steps=5), total_steps=40)
    attach(emb, ctl)
    gen = torch.Generator().manual_seed(2)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    updates = 0
    for step in range(20):
        (emb(_batch(gen)).values() - 1).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        stats = ctl.after_step(step)
        if stats["updated"]:
            updates += 1
            assert stats["active"] == ctl.active_weights() == 40
            assert stats["density"] == ctl.density_by_table() == {"t_a": 0.2}
    assert updates == 4 and ctl.exchanged_total > 0


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sgd"])
def test_the_sentinel_stays_zero_with_no_op_per_step_under_rowwise_adagrad(monkeypatch, optimizer):
    """Row-wise Adagrad: the sentinel's state is +inf, the fused step moves it by 0 and no step zeroes
    it (only the updates do, once each); SGD has no state: it is zeroed after every step."""
    tbe = cpu_tbe([(9, 4)], optimizer)
    remap = initial_remap(30, 8)
    ctl = RowDSLController(tbe, DSLConfig(enabled=True, mode="row", init="random", update_every=5, initial_exchange=0.25,
                                          end_fraction=1.0), total_steps=20, remaps={"t0": remap}, seed=1)
    assert ctl._frozen == (optimizer == "rowwise_adagrad")
    calls = []
    real = ctl._zero_sentinels
    monkeypatch.setattr(ctl, "_zero_sentinels", lambda: calls.append(1) or real())
    gen = torch.Generator().manual_seed(4)
    weight = tbe.split_embedding_weights()[0]
    for step in range(20):
        virtual = torch.randint(0, 30, (12,), generator=gen)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=virtual, lengths=torch.ones(12, dtype=torch.long))
        pooled = tbe(apply_remap(remap, virtual), kjt.offsets())
        ctl.observe(kjt, pooled)
        (pooled - 1).pow(2).sum().backward()
        ctl.after_step(step)
        assert float(weight[8].abs().sum()) == 0.0, step
    assert ctl.exchanged_total > 0
    assert len(calls) == (3 if optimizer == "rowwise_adagrad" else 20 + 3)  # one per exchanging update (+ one per step)

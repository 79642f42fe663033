"""Dynamic Sparse Learning: schedule, prune/grow rule, budget invariant, gradient hook, DMP + fused optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from embeddings.config import DSLConfig
from embeddings.dsl import DSLController, exchange_fraction, prune_and_grow
from embeddings.dsl.tables import DSLError
from features.errors import UserError
from embeddings.dsl.masks import frequency_mask, random_mask, select
from tests.embeddings.cpu_tbe import cpu_tbe


def _cfg(**kw) -> DSLConfig:
    base = dict(enabled=True, density=0.25, update_every=5, initial_exchange=0.3, end_fraction=0.8, init="random")
    base.update(kw)
    return DSLConfig(**base)


def _ebc(*tables: tuple[str, int, int, list[str], PoolingType]) -> EmbeddingBagCollection:
    return EmbeddingBagCollection(tables=[EmbeddingBagConfig(name=n, num_embeddings=r, embedding_dim=d,
                                                             feature_names=f, pooling=p) for n, r, d, f, p in tables])


def _batch(keys: list[str], rows: dict[str, int], batch: int, gen: torch.Generator, max_len: int = 3) -> KeyedJaggedTensor:
    lengths, values = [], []
    for k in keys:
        lens = torch.randint(1, max_len + 1, (batch,), generator=gen)
        lengths.append(lens)
        # a skewed id distribution, so some rows are hot and some never seen
        values.append((torch.rand(int(lens.sum()), generator=gen) ** 3 * rows[k]).long())
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))


# -- schedule ----------------------------------------------------------------------------------

def test_exchange_fraction_is_cosine_and_zero_from_the_end():
    cfg = _cfg(initial_exchange=0.5, end_fraction=0.8)
    assert exchange_fraction(0, 1000, cfg) == pytest.approx(0.5)
    assert exchange_fraction(400, 1000, cfg) == pytest.approx(0.25)          # half-way to the end: cos(pi/2)
    assert exchange_fraction(200, 1000, cfg) == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
    assert exchange_fraction(799, 1000, cfg) == pytest.approx(0.25 * (1 + math.cos(math.pi * 799 / 800)))
    assert exchange_fraction(800, 1000, cfg) == 0.0
    assert exchange_fraction(999, 1000, cfg) == 0.0


# -- pure rules --------------------------------------------------------------------------------

def test_prune_and_grow_picks_expected_weights_on_a_4x3_table():
    w = torch.tensor([[0.9, -0.1, 0.0],
                      [0.0, 0.5, 0.0],
                      [0.0, 0.0, 0.0],
                      [-0.3, 0.0, 0.2]])
    m = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    g = torch.tensor([[0.0, 9.0, 4.0],     # (0,1) is active: its large gradient must not matter
                      [1.0, 0.0, 0.0],
                      [0.0, 0.0, 7.0],
                      [0.0, 2.0, 0.0]])
    new = prune_and_grow({"t": w}, {"t": m}, {"t": g}, 2)["t"]
    # pruned: |-0.1| and |0.2| (the two smallest active); grown: g=7 at (2,2) and g=4 at (0,2)
    assert new.int().tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert int(new.sum()) == int(m.sum())
    # three exchanges: next smallest active is |-0.3|, next largest inactive gradient is 2 at (3,1)
    new3 = prune_and_grow({"t": w}, {"t": m}, {"t": g}, 3)["t"]
    assert new3.int().tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_prune_and_grow_ranks_globally_across_tables_and_never_regrows_pruned():
    w = {"a": torch.tensor([[5.0, 4.0], [3.0, 0.0]]), "b": torch.tensor([[0.01, 0.0, 0.02]])}
    m = {"a": torch.tensor([[True, True], [True, False]]), "b": torch.tensor([[True, False, True]])}
    g = {"a": torch.tensor([[100.0, 0.0], [0.0, 6.0]]), "b": torch.tensor([[50.0, 1.0, 0.0]])}
    new = prune_and_grow(w, m, g, 2)
    # both prunes land in table b (globally smallest), one grow in a (6) and one in b (1): weight moves between tables
    assert new["a"].int().tolist() == [[1, 1], [1, 1]]
    assert new["b"].int().tolist() == [[0, 1, 0]]
    # (b,0) was pruned and has gradient 50, yet it is not regrown in the same update
    assert not bool(new["b"][0, 0])


def test_select_breaks_ties_by_lower_position():
    v = torch.tensor([2.0, 1.0, 2.0, 2.0, 0.0])
    assert select(v, 2, largest=True).tolist() == [0, 2]
    assert select(v, 3, largest=False).tolist() == [0, 1, 4]


def test_initial_masks_have_exact_counts_and_frequency_init_favours_frequent_rows():
    gen = torch.Generator().manual_seed(1)
    assert int(random_mask(50, 8, 77, gen).sum()) == 77
    counts = torch.cat([torch.full((10,), 10_000), torch.full((10,), 10), torch.zeros(30)])
    m = frequency_mask(50, 8, 100, counts, gen)
    per_row = m.sum(1).float()
    assert int(m.sum()) == 100
    assert per_row[:10].mean() > per_row[10:20].mean() > per_row[20:].mean()
    assert int(m[20:].sum()) == 0  # never-seen ids get weights only after every seen row had its chance


# -- the controller on a plain EmbeddingBagCollection --------------------------------------------

def test_gradient_hook_accumulates_the_true_row_gradient_magnitude():
    torch.manual_seed(0)
    ebc = _ebc(("ts", 30, 4, ["a", "b"], PoolingType.SUM), ("tm", 20, 6, ["c"], PoolingType.MEAN))
    dsl = DSLController(ebc, _cfg(density=0.5, update_every=1000), total_steps=10_000)
    kjt = _batch(["a", "b", "c"], {"a": 30, "b": 30, "c": 20}, 8, torch.Generator().manual_seed(3))
    pooled = ebc(kjt)
    dsl.observe(kjt, pooled)
    target = torch.randn(pooled.values().shape, generator=torch.Generator().manual_seed(4))
    (pooled.values() * target).sum().backward()
    # reference: autograd through torch's own embedding_bag on copies of the (masked) weights
    ref = {n: ebc.embedding_bags[n].weight.detach().clone().requires_grad_() for n in ("ts", "tm")}
    jt = kjt.to_dict()
    parts = [torch.nn.functional.embedding_bag(jt[f].values(), ref[t], jt[f].offsets()[:-1], mode=mode)
             for f, t, mode in (("a", "ts", "sum"), ("b", "ts", "sum"), ("c", "tm", "mean"))]
    (torch.cat(parts, dim=1) * target).sum().backward()
    for name in ("ts", "tm"):
        assert float(ref[name].grad.abs().sum()) > 0
        assert torch.allclose(dsl.grad_acc[name], ref[name].grad.abs(), atol=1e-6), name
        # the model's own .grad is masked (dense optimizers must not move inactive weights)
        assert torch.equal(ebc.embedding_bags[name].weight.grad, ref[name].grad * dsl.masks[name])


def test_budget_holds_exactly_over_many_updates_and_regrown_weights_start_at_zero():
    torch.manual_seed(0)
    ebc = _ebc(("t1", 40, 8, ["f1"], PoolingType.SUM), ("t2", 25, 4, ["f2", "f3"], PoolingType.SUM),
               ("t3", 60, 4, ["f4"], PoolingType.MEAN))
    rows = {"f1": 40, "f2": 25, "f3": 25, "f4": 60}
    total = 240
    dsl = DSLController(ebc, _cfg(density=0.2, update_every=3, initial_exchange=0.5), total_steps=total)
    budget = dsl.budget
    assert budget == round(0.2 * 320) + round(0.2 * 100) + round(0.2 * 240)
    opt = torch.optim.Adagrad(ebc.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(5)
    updates, exchanged = 0, 0
    start_density = dsl.density_by_table()
    for step in range(total):
        kjt = _batch(list(rows), rows, 16, gen)
        pooled = ebc(kjt)
        dsl.observe(kjt, pooled)
        pooled.values().sum().mul(0.01).add(pooled.values().pow(2).mean()).backward()
        opt.step()
        opt.zero_grad()
        before = {k: v.clone() for k, v in dsl.masks.items()}
        stats = dsl.after_step(step)
        assert dsl.active_weights() == budget
        nonzero = sum(int((ebc.embedding_bags[n].weight != 0).sum()) for n in dsl.masks)
        assert nonzero <= budget
        for n, m in dsl.masks.items():
            assert int((ebc.embedding_bags[n].weight[~m] != 0).sum()) == 0
        if stats["updated"]:
            updates += 1
            exchanged += stats["exchanged"]
            for n, m in dsl.masks.items():
                grown = m & ~before[n]
                assert torch.all(ebc.embedding_bags[n].weight[grown] == 0)
    assert updates == total // 3
    assert exchanged > budget  # many exchanges happened, yet the count never moved
    assert stats["fraction"] == 0.0  # the schedule ended before training did
    assert dsl.density_by_table() != start_density  # global ranking moved weights between tables


def test_optimizer_state_is_reset_for_changed_weights():
    ebc = _ebc(("t", 6, 2, ["f"], PoolingType.SUM))
    opt = torch.optim.Adam(ebc.parameters(), lr=0.1)
    dsl = DSLController(ebc, _cfg(density=0.5, update_every=1, initial_exchange=0.5, end_fraction=1.0),
                        total_steps=100, optimizers=[opt])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.arange(6), lengths=torch.ones(6, dtype=torch.long))
    before = dsl.masks["t"].clone()
    pooled = ebc(kjt)
    dsl.observe(kjt, pooled)
    (pooled.values() - 1).pow(2).sum().backward()  # every weight, active or not, gets a gradient
    opt.step()
    stats = dsl.after_step(0)
    assert stats["exchanged"] == 3
    changed = before ^ dsl.masks["t"]
    state = opt.state[ebc.embedding_bags["t"].weight]
    assert int(changed.sum()) == 6
    assert torch.all(state["exp_avg"][changed] == 0) and torch.all(state["exp_avg_sq"][changed] == 0)
    assert torch.all(state["exp_avg_sq"][~changed & before] > 0)


def test_state_dict_round_trip_restores_masks_and_applies_them():
    ebc = _ebc(("t", 10, 4, ["f"], PoolingType.SUM))
    dsl = DSLController(ebc, _cfg(density=0.3), total_steps=10, seed=1)
    saved = dsl.state_dict()
    other_ebc = _ebc(("t", 10, 4, ["f"], PoolingType.SUM))
    other = DSLController(other_ebc, _cfg(density=0.3), total_steps=10, seed=2)
    assert not torch.equal(other.masks["t"], saved["masks"]["t"])
    other.load_state_dict(saved)
    assert torch.equal(other.masks["t"], saved["masks"]["t"])
    assert int((other_ebc.embedding_bags["t"].weight != 0).sum()) <= other.budget
    assert torch.all(other_ebc.embedding_bags["t"].weight[~saved["masks"]["t"]] == 0)


def test_frequency_init_needs_counts_with_one_count_per_row():
    ebc = _ebc(("t", 10, 4, ["f"], PoolingType.SUM))
    assert issubclass(DSLError, UserError)  # the CLI prints it as one line
    with pytest.raises(DSLError, match="no id frequencies"):
        DSLController(ebc, _cfg(init="frequency"), total_steps=10)
    with pytest.raises(DSLError, match="one count per row"):
        DSLController(ebc, _cfg(init="frequency"), total_steps=10, frequencies={"f": torch.ones(9)})
    dsl = DSLController(ebc, _cfg(init="frequency", density=0.25), total_steps=10,
                        frequencies={"f": torch.tensor([100, 90, 80, 70, 0, 0, 0, 0, 0, 0])})
    assert int(dsl.masks["t"][:4].sum()) == 10


# -- FBGEMM TBE directly, and DMP + fused optimizer ------------------------------------------------

def test_fbgemm_tbe_rowwise_adagrad_state_is_reset_for_rows_without_survivors():
    tbe = cpu_tbe([(20, 4)])
    dsl = DSLController(tbe, _cfg(density=0.25, update_every=2, initial_exchange=0.5, end_fraction=1.0), total_steps=20)
    gen = torch.Generator().manual_seed(0)
    for step in range(2):
        ids = torch.randint(0, 20, (30,), generator=gen)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["x"], values=ids, lengths=torch.full((10,), 3))
        before = dsl.masks["t0"].clone()
        pooled = tbe(ids, kjt.offsets())
        dsl.observe(kjt, pooled)
        pooled.pow(2).sum().backward()
        stats = dsl.after_step(step)
    assert stats["updated"] and stats["exchanged"] == 10
    after = dsl.masks["t0"]
    momentum = tbe.split_optimizer_states()[0][0]
    no_survivor = ~(before & after).any(1) & (before | after).any(1)
    assert int(no_survivor.sum()) > 0
    assert torch.all(momentum[no_survivor] == 0)
    survivors_touched = (before & after).any(1) & (momentum > 0)
    assert int(survivors_touched.sum()) > 0  # rows with a surviving weight kept their Adagrad history
    assert torch.all(tbe.split_embedding_weights()[0][~after] == 0)


@pytest.fixture(scope="module")
def process_group():
    from embeddings.sharding import single_process_group

    return single_process_group()


class _TwoTower(torch.nn.Module):
    """A tiny CTR-like model: EBC -> linear -> logit."""

    def __init__(self, ebc: EmbeddingBagCollection, width: int) -> None:
        super().__init__()
        self.ebc = ebc
        self.head = torch.nn.Linear(width, 1)

    def forward(self, kjt: KeyedJaggedTensor):
        pooled = self.ebc(kjt)
        return pooled, self.head(pooled.values()).squeeze(1)


def _dmp(sharding: dict[str, str], process_group):
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name="t_user", num_embeddings=64, embedding_dim=8, feature_names=["user"]),
        EmbeddingBagConfig(name="t_item", num_embeddings=48, embedding_dim=8, feature_names=["item", "hist"])],
        device=torch.device("meta"))
    apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": 0.1, "eps": 1e-8})
    model = _TwoTower(ebc, 24)
    constraints = {t: ParameterConstraints(sharding_types=[s], min_partition=4) for t, s in sharding.items()}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints)
    plan = planner.collective_plan(model, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)
    return DistributedModelParallel(model, device=torch.device("cpu"), plan=plan)


def _ctr_batch(gen: torch.Generator, batch: int = 64):
    user = torch.randint(0, 64, (batch,), generator=gen)
    item = torch.randint(0, 48, (batch,), generator=gen)
    hist = torch.randint(0, 48, (batch * 2,), generator=gen)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "item", "hist"], values=torch.cat([user, item, hist]),
        lengths=torch.cat([torch.ones(2 * batch, dtype=torch.long), torch.full((batch,), 2)]))
    label = ((user % 2 == 0) | (item < 8)).float()  # learnable from the ids alone
    return kjt, label


def _check_user_state_reset(sebc, dense_opt, before: torch.Tensor, after: torch.Tensor, sharding: str) -> None:
    """Optimizer state of t_user read straight from the optimizers: reset where DSL says it resets."""
    if sharding == "data_parallel":  # element-wise Adam moments of the dense optimizer
        param = dict(sebc.named_parameters())["embedding_bags.t_user.weight"]
        state = dense_opt.state[param]
        changed = before ^ after
        assert int(changed.sum()) > 0
        assert torch.all(state["exp_avg"][changed] == 0) and torch.all(state["exp_avg_sq"][changed] == 0)
    else:  # FBGEMM's fused row-wise Adagrad: one momentum per row
        st = sebc.fused_optimizer.state_dict()["state"]["embedding_bags.t_user.weight"]["t_user.momentum1"]
        momentum = st.local_shards()[0].tensor
        no_survivor = ~(before & after).any(1) & (before | after).any(1)
        assert torch.all(momentum[no_survivor] == 0)
        assert int(((before & after).any(1) & (momentum > 0)).sum()) > 0


@pytest.mark.parametrize("sharding", [{"t_user": "table_wise", "t_item": "column_wise"},
                                      {"t_user": "data_parallel", "t_item": "table_wise"}])
def test_dsl_inside_dmp_with_fused_rowwise_adagrad_keeps_budget_and_trains(sharding, process_group):
    from embeddings.sharding import dense_optimizer

    dmp = _dmp(sharding, process_group)
    sebc = dmp.module.ebc
    if sharding["t_item"] == "column_wise":
        assert len(sebc.state_dict()["embedding_bags.t_item.weight"].local_shards()) == 2
    steps = 120
    # the head, and data-parallel tables, are trained by a dense optimizer (DSL resets its state too)
    dense_opt = dense_optimizer(dmp, lr=0.01)
    dsl = DSLController(dmp, _cfg(density=0.4, update_every=10, initial_exchange=0.3, end_fraction=0.75),
                        total_steps=steps, optimizers=[dense_opt])
    gen = torch.Generator().manual_seed(1)
    losses, checked_resets = [], 0
    for step in range(steps):
        kjt, label = _ctr_batch(gen)
        pooled, logit = dmp(kjt)
        dsl.observe(kjt, pooled)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, label)
        loss.backward()
        dense_opt.step()
        dense_opt.zero_grad()
        before = dsl.masks["t_user"].clone()
        stats = dsl.after_step(step)
        if stats["updated"] and stats["exchanged"]:
            _check_user_state_reset(sebc, dense_opt, before, dsl.masks["t_user"], sharding["t_user"])
            checked_resets += 1
        losses.append(float(loss))
        assert dsl.active_weights() == dsl.budget
        state = sebc.state_dict()
        for name, mask in dsl.masks.items():
            weight = state[f"embedding_bags.{name}.weight"]
            if not hasattr(weight, "local_shards"):  # data-parallel: the replicated table
                assert torch.all(weight[~mask] == 0), (name, step)
                continue
            for shard in weight.local_shards():
                r0, c0 = shard.metadata.shard_offsets
                r, c = shard.tensor.shape
                assert torch.all(shard.tensor[~mask[r0:r0 + r, c0:c0 + c]] == 0), (name, step)
    assert dsl.updates == steps // 10 and dsl.exchanged_total > 0 and checked_resets >= 5
    assert dsl.budget == round(0.4 * 64 * 8) + round(0.4 * 48 * 8)
    # the pruned export of the sharded tables serves what the shards hold (fp32: exactly)
    exported = {t.name: t for t in dsl.export_pruned("fp32")}
    for name, mask in dsl.masks.items():
        t = exported[name]
        assert 0 < t.kept_rows <= int(mask.any(1).sum())  # active weights regrown at 0 and untouched since are 0
        weight = state[f"embedding_bags.{name}.weight"]
        full = torch.zeros(mask.shape)
        for shard in (weight.local_shards() if hasattr(weight, "local_shards") else []):
            r0, c0 = shard.metadata.shard_offsets
            full[r0:r0 + shard.tensor.shape[0], c0:c0 + shard.tensor.shape[1]] = shard.tensor
        if not hasattr(weight, "local_shards"):
            full = weight
        kept = t.index_remapping >= 0
        assert torch.equal(t.weight[t.index_remapping[kept].long()], full[kept])
        assert torch.all(full[~kept] == 0)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.8 * first, (first, last)


def test_grad_window_accumulates_only_the_last_steps_before_an_update():
    ebc = _ebc(("t", 30, 4, ["f"], PoolingType.SUM))
    dsl = DSLController(ebc, _cfg(density=0.5, update_every=5, grad_window=2, initial_exchange=0.3, end_fraction=1.0),
                        total_steps=100)
    opt = torch.optim.SGD(ebc.parameters(), lr=0.0)  # weights fixed: every step's gradient is the same
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1]))
    seen = []
    for step in range(5):
        pooled = ebc(kjt)
        dsl.observe(kjt, pooled)
        pooled.values().sum().backward()
        opt.step()
        opt.zero_grad()
        seen.append(float(dsl.grad_acc["t"].sum()))
        dsl.after_step(step)
    # steps 0..2 are outside the window (nothing accumulated); steps 3 and 4 add |grad| = 1 per weight of rows 1..3
    assert seen == [0.0, 0.0, 0.0, 12.0, 24.0]
    assert float(dsl.grad_acc["t"].sum()) == 0.0  # reset by the update


def test_prune_and_grow_refuses_nan_weights_among_active_ones():
    w = torch.tensor([[float("nan"), 1.0], [0.5, 0.0]])
    m = torch.tensor([[True, True], [False, False]])
    with pytest.raises(ValueError, match="NaN embedding weights"):
        prune_and_grow({"t": w}, {"t": m}, {"t": torch.ones(2, 2)}, 1)
    # a NaN in an inactive (masked, zeroed at the next step) weight does not matter
    new = prune_and_grow({"t": w}, {"t": ~m}, {"t": torch.ones(2, 2)}, 1)["t"]
    assert new.int().tolist() == [[1, 0], [1, 0]]  # 0.0 pruned; the NaN position grown (tie: lower position)


def test_gradient_hook_applies_per_id_weights_of_weighted_features():
    torch.manual_seed(1)
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="tw", num_embeddings=12, embedding_dim=3,
                                                            feature_names=["w"])], is_weighted=True)
    dsl = DSLController(ebc, _cfg(density=0.5, update_every=1000), total_steps=10_000)
    ids, lengths = torch.tensor([1, 4, 4, 7, 1]), torch.tensor([2, 0, 3])
    weights = torch.tensor([0.5, 2.0, -1.0, 3.0, 0.25])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["w"], values=ids, lengths=lengths, weights=weights)
    pooled = ebc(kjt)
    dsl.observe(kjt, pooled)
    target = torch.randn(pooled.values().shape, generator=torch.Generator().manual_seed(2))
    (pooled.values() * target).sum().backward()
    ref = ebc.embedding_bags["tw"].weight.detach().clone().requires_grad_()
    out = torch.nn.functional.embedding_bag(ids, ref, torch.tensor([0, 2, 2]), mode="sum", per_sample_weights=weights)
    (out * target).sum().backward()
    assert torch.allclose(dsl.grad_acc["tw"], ref.grad.abs(), atol=1e-6)
    assert float(dsl.grad_acc["tw"][4].sum()) > 0  # row 4 twice in one bag with weights 2 and -1


def test_no_gradient_accumulation_once_the_schedule_has_ended():
    ebc = _ebc(("t", 20, 2, ["f"], PoolingType.SUM))
    dsl = DSLController(ebc, _cfg(density=0.5, update_every=2, end_fraction=0.5), total_steps=8)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([3]), lengths=torch.tensor([1]))
    sums = []
    for step in range(8):
        pooled = ebc(kjt)
        dsl.observe(kjt, pooled)
        pooled.values().sum().backward()
        sums.append(float(dsl.grad_acc["t"].sum()))
        dsl.after_step(step)
    # updates come after 2, 4, 6, 8 steps; only the first exchanges (the schedule ends at 0.5 * 8 = 4),
    # so only steps 0 and 1 accumulate (|grad| = 1 on both weights of row 3 each step)
    assert sums == [2.0, 4.0] + [0.0] * 6


def test_dense_optimizer_momentum_cannot_revive_pruned_weights_even_unregistered():
    torch.manual_seed(3)
    ebc = _ebc(("t", 16, 4, ["f"], PoolingType.SUM))
    opt = torch.optim.Adam(ebc.parameters(), lr=0.05)  # deliberately not handed to the controller
    dsl = DSLController(ebc, _cfg(density=0.3, update_every=2, initial_exchange=0.5, end_fraction=1.0), total_steps=40)
    gen = torch.Generator().manual_seed(4)
    for step in range(30):
        kjt = _batch(["f"], {"f": 16}, 4, gen)
        pooled = ebc(kjt)
        dsl.observe(kjt, pooled)
        pooled.values().pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        dsl.after_step(step)
        weight = ebc.embedding_bags["t"].weight
        assert int(torch.count_nonzero(weight[~dsl.masks["t"]])) == 0, step

"""M2TRec: metadata KJTs, chunked catalogue encoding, cold items scored from metadata after short training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.item_features import ItemFeatures
from models.m2trec import M2TRec, M2TRecConfig
from pipelines.runtime.config import ModelConfig, TrainConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.train import build_model, train_session_model

CATS, WARM, COLD = 4, 10, 2


def toy_world(seed: int = 0, n_sessions: int = 300) -> SessionData:
    """CATS categories of WARM trained items + COLD items never in training; sessions stay in one category.

    Item metadata: category (ids 2..), three tokens shared by the category plus one random token.
    """
    rng = np.random.default_rng(seed)
    n = CATS * (WARM + COLD)
    cat = np.repeat(np.arange(CATS), WARM + COLD)
    is_cold = np.tile(np.r_[np.zeros(WARM, bool), np.ones(COLD, bool)], CATS)
    category = torch.tensor(np.r_[0, cat + 2])
    tokens = [[]] + [[2 + 3 * c, 3 + 3 * c, 4 + 3 * c, int(rng.integers(2 + 3 * CATS, 2 + 3 * CATS + 20))] for c in cat]
    offsets = torch.tensor(np.r_[0, np.cumsum([len(t) for t in tokens])])
    values = torch.tensor([v for t in tokens for v in t])
    feats = ItemFeatures({"category": category}, {"tokens": (offsets, values)})
    warm_by_cat = [np.flatnonzero((cat == c) & ~is_cold) + 1 for c in range(CATS)]
    train = [rng.choice(warm_by_cat[c], size=5) for c in rng.integers(0, CATS, size=n_sessions)]
    return SessionData([f"i{i}" for i in range(n)], feats, {"category": CATS + 2, "tokens": 2 + 3 * CATS + 20},
                       {"train": train, "validation": [], "test": []})


def test_kjt_gathers_every_attribute_of_the_requested_items():
    data = toy_world()
    kjt = data.features.kjt(torch.tensor([1, 13]))
    assert kjt.keys() == ["category", "tokens"]
    assert kjt["category"].values().tolist() == [2, 3]                # item 1 in category 0, item 13 in category 1
    assert kjt["tokens"].lengths().tolist() == [4, 4]
    assert kjt["tokens"].values().tolist()[:3] == [2, 3, 4] and kjt["tokens"].values().tolist()[4:7] == [5, 6, 7]


def test_chunked_catalogue_encoding_equals_one_shot():
    data = toy_world()
    torch.manual_seed(0)
    model = M2TRec(M2TRecConfig(categorical={"category": 6}, multi_valued={"tokens": 34}, hidden=8, heads=2,
                                hybrid_item_id_buckets=16), data.features).eval()
    one_shot = model.item_repr(torch.arange(data.n_items + 1))
    for chunk in (1, 7, 48, 1000):
        assert torch.allclose(model.encode_catalogue(chunk_size=chunk), one_shot, atol=1e-6)


def test_memory_does_not_grow_with_the_catalogue():
    small = M2TRec(M2TRecConfig(categorical={"category": 6}, hidden=8, heads=2), toy_world().features)
    feats = ItemFeatures({"category": torch.randint(0, 6, (100_001,))})
    big = M2TRec(M2TRecConfig(categorical={"category": 6}, hidden=8, heads=2), feats)
    assert small.embedding_bytes() == big.embedding_bytes() == 6 * 8 * 4


def test_unseen_item_scores_higher_for_a_session_of_its_own_category():
    data = toy_world()
    cfg = TrainConfig(model=ModelConfig(name="m2trec", hidden=16, layers=1, heads=2, dropout=0.0, max_length=8,
                                        task_attributes=["category"], loss_weights=[1.0, 0.3], softmax="sampled",
                                        negatives=16), epochs=4, batch_size=64, dense_learning_rate=1e-2, device="cpu")
    model = build_model(cfg.model, data)
    history = train_session_model(model, data, cfg, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    model.eval()
    cat_emb = model.encode_catalogue()
    cat = data.features.categorical["category"]
    cold = [i for i in range(1, data.n_items + 1) if (i - 1) % (WARM + COLD) >= WARM]
    assert data.train_counts()[cold].sum() == 0
    # one session per category, made of that category's warm items
    sessions = torch.stack([torch.tensor([c * (WARM + COLD) + k + 1 for k in range(4)]) for c in range(CATS)])
    with torch.no_grad():
        rep, tasks = model(sessions, torch.full((CATS,), 4))
    scores = rep @ cat_emb.T                                            # [CATS sessions, catalogue]
    for item in cold:
        own = int(cat[item]) - 2
        others = [c for c in range(CATS) if c != own]
        assert scores[own, item] > scores[others, item].max(), f"cold item {item}: {scores[:, item].tolist()}"
    assert tasks["category"].argmax(1).tolist() == [c + 2 for c in range(CATS)]


@pytest.mark.parametrize("options", [dict(item_combine="concat", pooling="last"), dict(hybrid_item_id_buckets=32, softmax="full")])
def test_variants_train_and_keep_warm_items_apart(options):
    """concat+linear combination with last-position pooling, and the hybrid hashed-id mode, both learn."""
    data = toy_world(seed=1, n_sessions=120)
    cfg = TrainConfig(model=ModelConfig(name="m2trec", hidden=8, layers=1, heads=2, dropout=0.0, max_length=6,
                                        task_attributes=["category"], loss_weights=[1.0, 0.5], **options),
                      epochs=3, batch_size=64, dense_learning_rate=1e-2, device="cpu")
    model = build_model(cfg.model, data)
    history = train_session_model(model, data, cfg, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    expected_tables = 3 if options.get("hybrid_item_id_buckets") else 2
    assert len(model.ebc.embedding_bag_configs()) == expected_tables
    assert (model.combine is not None) == (options.get("item_combine") == "concat")


def test_zero_weighted_heads_are_left_out_single_task():
    data = toy_world()
    single = build_model(ModelConfig(name="m2trec", hidden=8, heads=2, task_attributes=["category"], loss_weights=[1.0, 0.0]), data)
    multi = build_model(ModelConfig(name="m2trec", hidden=8, heads=2, task_attributes=["category"], loss_weights=[1.0, 0.2]), data)
    assert list(single.task_heads) == [] and list(multi.task_heads) == ["category"]


def _hybrid(data: SessionData, **kw) -> M2TRec:
    cfg = M2TRecConfig(categorical={"category": CATS + 2}, multi_valued={"tokens": 2 + 3 * CATS + 20}, hidden=8, heads=2,
                       item_ids=True, **kw)
    return M2TRec(cfg, data.features, data.train_counts())


def test_hybrid_gives_cold_items_exactly_their_metadata_encoding_and_warm_items_an_id_part():
    data = toy_world()
    torch.manual_seed(0)
    model = _hybrid(data).eval()
    with torch.no_grad():
        model.ids.embedding.weight.normal_()
        model.gate_bias.fill_(2.0)
    counts = data.train_counts()
    warm, cold = torch.nonzero(counts > 0).squeeze(1), torch.nonzero(counts[1:] == 0).squeeze(1) + 1
    kt = model.ebc(data.features.kjt(torch.arange(data.n_items + 1)))
    meta = model.item_norm(kt.values().view(data.n_items + 1, 2, -1).sum(1))
    rep = model.item_repr(torch.arange(data.n_items + 1))
    assert cold.numel() == CATS * COLD and warm.numel() == CATS * WARM
    assert torch.equal(rep[cold], meta[cold])
    assert (rep[warm] - meta[warm]).abs().sum(1).min() > 0.1
    # the whole ID part sits in one table row per training item (row 0: padding and every cold item)
    assert model.ids.embedding.weight.shape == (CATS * WARM + 1, 8)
    assert model.embedding_bytes() == (6 + 34 + CATS * WARM + 1) * 8 * 4


def test_hybrid_id_dropout_acts_in_training_only():
    data = toy_world()
    torch.manual_seed(0)
    model = _hybrid(data, item_id_dropout=0.5)
    with torch.no_grad():
        model.ids.embedding.weight.normal_()
    warm = torch.nonzero(data.train_counts() > 0).squeeze(1)
    model.eval()
    a, b = model.item_repr(warm), model.item_repr(warm)
    assert torch.equal(a, b)
    model.train()
    dropped = [(model.item_repr(warm) - a).abs().sum(1) > 1e-6 for _ in range(20)]   # True: ID part kept
    share_dropped = 1 - torch.stack(dropped).float().mean()
    assert 0.4 < float(share_dropped) < 0.6


def test_hybrid_gate_grows_with_the_training_count():
    data = toy_world()
    model = _hybrid(data)
    with torch.no_grad():
        model.gate_scale.fill_(1.0)
        model.gate_bias.fill_(-2.0)
    counts = data.train_counts()
    rare, frequent = int(torch.argmin(torch.where(counts > 0, counts, 10**9))), int(torch.argmax(counts))
    gate = torch.sigmoid(model.log_count * model.gate_scale[0] + model.gate_bias[0])
    assert counts[rare] < counts[frequent] and gate[rare] < gate[frequent]
    assert float(gate[rare]) == pytest.approx(float(torch.sigmoid(torch.log1p(counts[rare].float()) - 2.0)))


def test_hybrid_item_id_table_can_be_compressed_by_a_plan_method():
    data = toy_world()
    torch.manual_seed(0)
    dense = _hybrid(data)
    hashed = _hybrid(data, item_id_method="hashing", item_id_params={"buckets": 8})
    assert dense.ids.embedding_bytes() == (CATS * WARM + 1) * 8 * 4
    assert hashed.ids.embedding_bytes() == 8 * 8 * 4
    cold = torch.nonzero(data.train_counts()[1:] == 0).squeeze(1) + 1
    assert hashed.ids(cold).abs().sum() == 0 and hashed.ids(torch.tensor([0])).abs().sum() == 0
    assert hashed.ids(torch.tensor([1, 2])).abs().sum() > 0


@pytest.mark.parametrize("item_ids,train_cold,expected", [("auto", True, True), ("auto", False, False),
                                                          ("on", False, True), ("off", True, False)])
def test_build_model_turns_the_hybrid_on_for_data_with_warm_and_cold_items(item_ids, train_cold, expected):
    data = toy_world()
    if not train_cold:   # every item appears in training once
        data.sessions["train"] = data.sessions["train"] + [np.arange(1, data.n_items + 1)]
    model = build_model(ModelConfig(name="m2trec", hidden=8, heads=2, task_attributes=[], loss_weights=[1.0],
                                    item_ids=item_ids), data)
    assert (model.ids is not None) == expected


def test_hybrid_cold_offset_lifts_only_items_without_an_id_row_at_ranking():
    from pipelines.sessions.evaluate import evaluate_session_model

    data = toy_world()
    cold = [i for i in range(1, data.n_items + 1) if (i - 1) % (WARM + COLD) >= WARM]
    data.sessions["test"] = [np.array([1, 2, c]) for c in cold]           # every test target is a cold item
    torch.manual_seed(0)
    plain = _hybrid(data)
    assert plain.score_bias() is None
    lifted = _hybrid(data, cold_offset=1e4)
    lifted.load_state_dict(plain.state_dict())
    bias = lifted.score_bias()
    assert bias[cold].tolist() == [1e4] * len(cold) and bias[torch.tensor([1, 2, 3])].tolist() == [0.0, 0.0, 0.0]
    r = evaluate_session_model(lifted, data, "test", positions=1, ks=[10], max_length=8)
    assert r["cold"]["n"] == len(cold) == 8 and r["cold"]["recall@10"] == 1.0       # the 8 cold items rank first
    assert evaluate_session_model(plain, data, "test", positions=1, ks=[10], max_length=8)["cold"]["recall@10"] < 1.0

"""PlanEmbeddings / PlanEmbeddingCollection: layout, byte reports, input errors, unpooled QR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.errors import EmbeddingInputError, MethodParamsError
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import build_embedding_collection, build_embeddings, table_report


def _plan() -> EmbeddingPlan:
    return EmbeddingPlan([
        TableSpec("t_a", ["a", "a2"], rows=20, dim=8),
        TableSpec("t_b", ["b"], rows=100, dim=8, method="qr", params={"m": 10}),
        TableSpec("t_c", ["c"], rows=50, dim=8, method="mixed_dim", params={"stored_dim": 4}),
        TableSpec("t_x", ["x"], rows=50, dim=8, method="drop"),
    ])


def _batch(keys=("a", "a2", "b", "c", "x")) -> KeyedJaggedTensor:
    per = {"a": [[1], [2, 3]], "a2": [[4], []], "b": [[99], [5]], "c": [[0], [49]], "x": [[1], [1]], "extra": [[7], [7]]}
    vals, lens = [], []
    for k in keys:
        for bag in per[k]:
            vals += bag
            lens.append(len(bag))
    return KeyedJaggedTensor.from_lengths_sync(keys=list(keys), values=torch.tensor(vals), lengths=torch.tensor(lens))


def test_one_ebc_holds_every_physical_table_and_output_follows_plan_order():
    emb = build_embeddings(_plan())
    names = [c.name for c in emb.ebc.embedding_bag_configs()]
    assert names == ["t_a", "t_b__q", "t_b__r", "t_c"]
    assert emb.ebc.embedding_bag_configs()[0].feature_names == ["a", "a2"]  # a shared table
    kt = emb(_batch(("x", "c", "b", "a2", "a", "extra")))  # any key order, extra keys ignored
    assert kt.keys() == ["a", "a2", "b", "c"]
    assert kt.values().shape == (2, 32)
    w = emb.ebc.embedding_bags["t_a"].weight.detach()
    assert torch.allclose(kt["a"][1], w[2] + w[3]) and torch.allclose(kt["a2"][0], w[4])
    assert torch.equal(kt["a2"][1], torch.zeros(8))


def test_gradients_reach_every_physical_table_and_projection():
    emb = build_embeddings(_plan())
    emb(_batch()).values().sum().backward()
    for name in ("t_a", "t_b__q", "t_b__r", "t_c"):
        assert emb.ebc.embedding_bags[name].weight.grad.abs().sum() > 0
    assert emb.combiners["t_c"].proj.weight.grad.abs().sum() > 0


def test_table_report_bytes():
    rows = {r["table"]: r for r in table_report(_plan())}
    assert rows["t_a"]["bytes"] == rows["t_a"]["fp32_bytes"] == 20 * 8 * 4
    assert rows["t_b"]["bytes"] == (10 + 10) * 32 and rows["t_b"]["fp32_bytes"] == 3200
    assert rows["t_c"]["bytes"] == 50 * 4 * 4 + 4 * 8 * 4
    assert rows["t_x"]["bytes"] == 0 and rows["t_x"]["fp32_bytes"] == 0


def test_input_errors_name_the_feature_and_the_fix():
    emb = build_embeddings(_plan())
    with pytest.raises(EmbeddingInputError, match=r"feature\(s\) \['c'\] .* missing"):
        emb(_batch(("a", "a2", "b")))
    bad = KeyedJaggedTensor.from_lengths_sync(keys=["a", "a2", "b", "c"], values=torch.tensor([1, 2, 3, 20]),
                                              lengths=torch.tensor([1, 1, 1, 1]))
    with pytest.raises(EmbeddingInputError, match="feature 'c': id 50 outside 0..49 .*vocab stage"):
        emb(KeyedJaggedTensor.from_lengths_sync(keys=["a", "a2", "b", "c"], values=torch.tensor([1, 2, 3, 50]),
                                                lengths=torch.tensor([1, 1, 1, 1])))
    assert emb(bad)["c"].shape == (1, 8)
    with pytest.raises(EmbeddingInputError, match="id -1"):
        emb(KeyedJaggedTensor.from_lengths_sync(keys=["a", "a2", "b", "c"], values=torch.tensor([-1, 2, 3, 4]),
                                                lengths=torch.tensor([1, 1, 1, 1])))
    with pytest.raises(MethodParamsError, match="feature 'a' is in two tables"):
        build_embeddings(EmbeddingPlan([TableSpec("t1", ["a"], rows=3, dim=2), TableSpec("t2", ["a"], rows=3, dim=2)]))


def test_unpooled_collection_is_exact_per_id_for_qr_and_hashing():
    torch.manual_seed(0)
    plan = EmbeddingPlan([TableSpec("t_i", ["item"], rows=100, dim=4, method="qr", params={"m": 10}),
                          TableSpec("t_c", ["cat"], rows=30, dim=4, method="hashing", params={"buckets": 7})])
    ec = build_embedding_collection(plan)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item", "cat"], values=torch.tensor([5, 57, 99, 3, 29, 8]),
                                              lengths=torch.tensor([2, 1, 2, 1]))
    out = ec(kjt)
    q = ec.ec.embeddings["t_i__q"].weight.detach().numpy()
    r = ec.ec.embeddings["t_i__r"].weight.detach().numpy()
    np.testing.assert_allclose(out["item"].values().detach().numpy(), np.stack([q[i // 10] * r[i % 10] for i in (5, 57, 99)]), rtol=1e-6)
    assert out["item"].lengths().tolist() == [2, 1]
    h = ec.ec.embeddings["t_c"].weight.detach().numpy()
    ids = np.array([3, 29, 8])
    np.testing.assert_allclose(out["cat"].values().detach().numpy(), h[((ids * 2654435761) & 0xFFFFFFFF) % 7], rtol=1e-6)
    with pytest.raises(MethodParamsError, match="one physical dim"):
        build_embedding_collection(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=8, method="mixed_dim", params={"stored_dim": 4}),
                                                  TableSpec("u", ["g"], rows=10, dim=8)]))


def test_tables_are_built_on_the_given_device():
    emb = build_embeddings(_plan(), device=torch.device("cpu"))
    assert emb.ebc.embedding_bags["t_a"].weight.device.type == "cpu"

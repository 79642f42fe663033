"""Each compression method's lookup against a plain reference with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.compression import get_method, known_methods, row_bytes
from embeddings.compression.hashing import hash_bucket
from embeddings.compression.quantize import fake_quantize_rows, quantization_error_bound
from embeddings.errors import MethodParamsError, UnknownMethodError
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import build_embeddings, physical_key


def _kjt(feature: str, bags: list[list[int]]) -> KeyedJaggedTensor:
    values = torch.tensor([i for b in bags for i in b], dtype=torch.long)
    lengths = torch.tensor([len(b) for b in bags], dtype=torch.int32)
    return KeyedJaggedTensor.from_lengths_sync(keys=[feature], values=values, lengths=lengths)


def _weights(emb, table: str, suffix: str = "") -> np.ndarray:
    return emb.ebc.embedding_bags[physical_key(table, suffix)].weight.detach().numpy()


BAGS = [[3], [0, 7, 7], [], [9, 1]]


def test_dense_sum_and_mean_equal_numpy():
    for pooling in ("sum", "mean"):
        torch.manual_seed(0)
        emb = build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, pooling=pooling)]))
        w = _weights(emb, "t")
        out = emb(_kjt("f", BAGS))["f"].detach().numpy()
        agg = np.sum if pooling == "sum" else np.mean
        ref = np.stack([agg(w[b], axis=0) if b else np.zeros(4, dtype=np.float32) for b in BAGS])
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


def test_hashing_maps_ids_like_numpy_and_looks_up_buckets():
    ids = np.array([0, 1, 2, 12345, 2**31 - 1], dtype=np.int64)
    ref = ((ids * 2654435761) & 0xFFFFFFFF) % 97
    assert hash_bucket(torch.from_numpy(ids), 97).tolist() == ref.tolist()
    torch.manual_seed(0)
    spec = TableSpec("t", ["f"], rows=1000, dim=4, method="hashing", params={"buckets": 5})
    emb = build_embeddings(EmbeddingPlan([spec]))
    assert emb.ebc.embedding_bags["t"].weight.shape == (5, 4)
    w = _weights(emb, "t")
    bags = [[999], [17, 400], [3]]
    out = emb(_kjt("f", bags))["f"].detach().numpy()
    ref = np.stack([w[((np.array(b) * 2654435761) & 0xFFFFFFFF) % 5].sum(0) for b in bags])
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    # hashing accepts ids beyond `rows` (it hashes anything non-negative)
    assert emb(_kjt("f", [[5000]]))["f"].shape == (1, 4)


def test_qr_is_elementwise_product_of_quotient_and_remainder_rows():
    torch.manual_seed(0)
    spec = TableSpec("t", ["f"], rows=100, dim=4, method="qr", params={"m": 8})
    emb = build_embeddings(EmbeddingPlan([spec]))
    q, r = _weights(emb, "t", "q"), _weights(emb, "t", "r")
    assert q.shape == (13, 4) and r.shape == (8, 4)
    ids = [0, 7, 8, 42, 99]
    out = emb(_kjt("f", [[i] for i in ids]))["f"].detach().numpy()
    ref = np.stack([q[i // 8] * r[i % 8] for i in ids])
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    # every id gets a distinct vector (unlike hashing to 21 rows)
    all_ids = emb(_kjt("f", [[i] for i in range(100)]))["f"].detach().numpy()
    assert len({tuple(np.round(v, 6)) for v in all_ids}) == 100


def test_mixed_dim_projects_pooled_rows_exactly():
    torch.manual_seed(0)
    spec = TableSpec("t", ["f"], rows=10, dim=8, method="mixed_dim", params={"stored_dim": 4})
    emb = build_embeddings(EmbeddingPlan([spec]))
    w = _weights(emb, "t")
    P = emb.combiners["t"].proj.weight.detach().numpy()  # [8, 4]
    assert w.shape == (10, 4) and P.shape == (8, 4)
    out = emb(_kjt("f", BAGS))["f"].detach().numpy()
    ref = np.stack([(w[b] @ P.T).sum(0) if b else np.zeros(8, dtype=np.float32) for b in BAGS])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_fake_quant_matches_fbgemm_rowwise_codec():
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    for bits in (8, 4):
        q = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(x, bits)
        served = torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(q, bits)
        fake = fake_quantize_rows(x, bits)
        assert torch.allclose(fake, served, rtol=0, atol=1e-6)  # the same codec (x + (q - x) rounds at 1 ulp)
        assert torch.all((served - x).abs() <= quantization_error_bound(x, f"int{bits}")[:, None])


def test_fake_quant_gradient_is_straight_through():
    x = torch.randn(3, 8, requires_grad=True)
    fake_quantize_rows(x, 8).sum().backward()
    assert torch.equal(x.grad, torch.ones(3, 8))


def test_int8_qat_forward_quantizes_in_training_only():
    torch.manual_seed(0)
    spec = TableSpec("t", ["f"], rows=10, dim=8, method="int8", params={"qat": True})
    emb = build_embeddings(EmbeddingPlan([spec]))
    w = torch.from_numpy(_weights(emb, "t"))
    kjt = _kjt("f", [[i] for i in range(10)])
    emb.train()
    assert torch.allclose(emb(kjt)["f"].detach(), fake_quantize_rows(w, 8), atol=1e-7)
    assert not torch.equal(emb(kjt)["f"].detach(), w)
    emb.eval()
    assert torch.equal(emb(kjt)["f"].detach(), w)


def test_drop_has_no_table_and_no_output():
    plan = EmbeddingPlan([TableSpec("t_a", ["a"], rows=10, dim=4), TableSpec("t_b", ["b"], rows=10, dim=4, method="drop")])
    emb = build_embeddings(plan)
    assert emb.features == ["a"]
    assert [c.name for c in emb.ebc.embedding_bag_configs()] == ["t_a"]
    assert get_method("drop").table_bytes(10, 4, {}) == 0


def test_bytes_per_method():
    assert get_method("dense").table_bytes(100, 16, {}) == 6400
    assert get_method("fp16").table_bytes(100, 16, {}) == 3200
    assert get_method("int8").table_bytes(100, 16, {}) == 100 * 20
    assert get_method("int4").table_bytes(100, 16, {}) == 100 * 12
    assert get_method("hashing").table_bytes(100, 16, {"buckets": 10}) == 640
    assert get_method("qr").table_bytes(100, 16, {"m": 10}) == (10 + 10) * 64
    assert get_method("mixed_dim").table_bytes(100, 16, {"stored_dim": 4}) == 100 * 16 + 4 * 16 * 4
    assert row_bytes(6, "fp16") == 12


def test_registry_rejects_unknown_names_and_bad_params():
    assert {"dense", "hashing", "qr", "mixed_dim", "fp16", "int8", "int4", "drop"} <= set(known_methods())
    with pytest.raises(UnknownMethodError, match="'hashin' is unknown; use one of .*hashing"):
        get_method("hashin")
    with pytest.raises(MethodParamsError, match="needs params.buckets"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, method="hashing")]))
    with pytest.raises(MethodParamsError, match="no parameter"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, method="qr", params={"m": 3, "n": 1})]))
    with pytest.raises(MethodParamsError, match="stored_dim=8 exceeds dim=4"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, method="mixed_dim", params={"stored_dim": 8})]))
    with pytest.raises(MethodParamsError, match="divisible by 4"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=6, method="int4")]))
    with pytest.raises(MethodParamsError, match="stored_dim=2 must be divisible by 4"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=8, method="mixed_dim", params={"stored_dim": 2})]))
    with pytest.raises(MethodParamsError, match="must be a bool"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=8, method="int8", params={"qat": "yes"})]))


def test_qr_add_is_exact_for_multi_id_bags_under_sum_and_mean_pooling():
    for pooling in ("sum", "mean"):
        torch.manual_seed(0)
        spec = TableSpec("t", ["f"], rows=100, dim=4, method="qr", params={"m": 8, "op": "add"}, pooling=pooling)
        emb = build_embeddings(EmbeddingPlan([spec]))
        q, r = _weights(emb, "t", "q"), _weights(emb, "t", "r")
        bags = [[3], [0, 70, 70], [], [99, 1, 42, 8]]
        out = emb(_kjt("f", bags))["f"].detach().numpy()
        agg = np.sum if pooling == "sum" else np.mean
        ref = np.stack([agg([q[i // 8] + r[i % 8] for i in b], axis=0) if b else np.zeros(4, dtype=np.float32) for b in bags])
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(MethodParamsError, match="params.op='max' is unknown"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=10, dim=4, method="qr", params={"m": 3, "op": "max"})]))

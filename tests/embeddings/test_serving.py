"""`served_embeddings`: a trained plan's rows served on FBGEMM inference tables in any precision."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.compression.quantize import quantization_error_bound
from embeddings.errors import ExportError
from embeddings.serving import served_embeddings
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import build_embeddings


def _model():
    torch.manual_seed(0)
    plan = EmbeddingPlan([TableSpec("t_a", ["a"], rows=50, dim=8), TableSpec("t_b", ["b"], rows=300, dim=8, method="qr",
                                                                             params={"m": 20}),
                          TableSpec("t_c", ["c"], rows=40, dim=8, method="int8")])
    return build_embeddings(plan).eval()


def _kjt():
    ids = torch.arange(30)
    return KeyedJaggedTensor.from_lengths_sync(keys=["a", "b", "c"], values=torch.cat([ids, ids * 9, ids]),
                                               lengths=torch.ones(90, dtype=torch.int32))


def test_as_trained_serving_gives_the_trained_vectors():
    emb = _model()
    with torch.no_grad():
        want = emb(_kjt()).values()
        got = served_embeddings(emb, "as-trained")(_kjt()).values()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("serving", ["fp16", "int8", "int4"])
def test_quantized_serving_stays_within_the_row_wise_error_bound(serving):
    emb = _model()
    served = served_embeddings(emb, serving)
    assert all(type(t).__name__ == "IntNBitTableBatchedEmbeddingBagsCodegen" for t in served.tbes)
    w = emb.ebc.state_dict()["embedding_bags.t_a.weight"]
    ids = torch.arange(30)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b", "c"], values=torch.cat([ids, ids, ids]),
                                              lengths=torch.ones(90, dtype=torch.int32))
    with torch.no_grad():
        got = served(kjt).to_dict()["a"]
    err = (got - w[:30]).abs().max(dim=1).values
    bound = quantization_error_bound(w[:30], serving)
    assert (err <= bound).all() and err.max() > 0


def test_unknown_serving_is_refused():
    with pytest.raises(ExportError, match="serving 'int2' is unknown"):
        served_embeddings(_model(), "int2")

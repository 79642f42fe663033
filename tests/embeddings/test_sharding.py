"""The DMP / FBGEMM path: fused sparse optimizer, TorchRec planner, world-size-1 gloo group."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.config import EmbeddingsConfig
from embeddings.errors import EmbeddingError
from embeddings.export import export_embeddings, load_exported
from embeddings.sharding import dense_optimizer, fbgemm_model, sparse_optimizer_class
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import build_embeddings

PLAN = EmbeddingPlan([
    TableSpec("t_a", ["a"], rows=40, dim=8),
    TableSpec("t_b", ["b"], rows=300, dim=8, method="qr", params={"m": 20}),
    TableSpec("t_c", ["c"], rows=100, dim=8, method="mixed_dim", params={"stored_dim": 4}),
    TableSpec("t_d", ["d"], rows=100, dim=8, method="hashing", params={"buckets": 25}),
    TableSpec("t_e", ["e"], rows=100, dim=8, method="int8", params={"qat": True}),
])
ROWS = {"a": 40, "b": 300, "c": 100, "d": 100, "e": 100}


class TinyCTR(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = build_embeddings(PLAN)
        self.mlp = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.mlp(self.emb(kjt).values()).squeeze(1)


def _data(n: int = 512):
    g = torch.Generator().manual_seed(0)
    ids = {f: torch.randint(0, r, (n,), generator=g) for f, r in ROWS.items()}
    y = ((ids["a"] % 2) ^ (ids["b"] % 3 == 0).long()).float()  # learnable from the ids alone
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(ROWS), values=torch.cat(list(ids.values())),
                                              lengths=torch.ones(n * len(ROWS), dtype=torch.int32))
    return kjt, y


def test_dmp_fused_training_lowers_the_loss_and_exports(tmp_path):
    torch.manual_seed(0)
    dmp = fbgemm_model(TinyCTR(), EmbeddingsConfig(optimizer="rowwise_adagrad", learning_rate=0.1), torch.device("cpu"))
    shardings = {name: ps.sharding_type for plan in dmp.plan.plan.values() for name, ps in plan.items()}
    kernels = {name: ps.compute_kernel for plan in dmp.plan.plan.values() for name, ps in plan.items()}
    assert set(shardings) == {"t_a", "t_b__q", "t_b__r", "t_c", "t_d", "t_e"}
    assert set(kernels.values()) == {"fused"}  # FBGEMM TBE with the optimizer in its backward
    assert set(shardings.values()) <= {"table_wise", "column_wise"}
    opt = dense_optimizer(dmp, lr=1e-2)
    kjt, y = _data()
    before = dmp.module.emb.ebc.state_dict()["embedding_bags.t_a.weight"].local_shards()[0].tensor.clone()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(dmp(kjt), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    after = dmp.module.emb.ebc.state_dict()["embedding_bags.t_a.weight"].local_shards()[0].tensor
    assert not torch.equal(before, after)  # the fused optimizer updated the table
    # the trained, sharded tables export and serve the same outputs (int8 within its bound)
    export_embeddings(dmp, tmp_path / "emb.pt")
    served = load_exported(tmp_path / "emb.pt")
    dmp.eval()
    with torch.no_grad():
        trained = dmp.module.emb(kjt)
        out = served(kjt)
    for f in ("a", "b", "c", "d"):
        assert torch.allclose(trained[f], out[f], atol=1e-5), f
    assert (trained["e"] - out["e"]).abs().max() < 0.05


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(EmbeddingError, match="'adagradd' is not a fused sparse optimizer; use one of rowwise_adagrad, sgd, adam"):
        sparse_optimizer_class("adagradd")
    with pytest.raises(EmbeddingError, match="holds no TorchRec"):
        fbgemm_model(nn.Linear(2, 2), EmbeddingsConfig(), torch.device("cpu"))
    with pytest.raises(EmbeddingError, match="dim 6 is not divisible by 4"):
        fbgemm_model(build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=5, dim=6)])), EmbeddingsConfig(), torch.device("cpu"))

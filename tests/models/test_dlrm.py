"""DLRM: shapes, the interaction width, and that the dot interaction sees the embeddings."""

from __future__ import annotations

import pytest
import torch

from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from embeddings.spec import EmbeddingPlan, TableSpec
from models.dlrm import DLRM
from models.errors import ModelError
from pipelines.runtime.config import ModelConfig
from pipelines.ctr.model import build_ctr_model


def _ebc(dim: int = 4) -> EmbeddingBagCollection:
    return EmbeddingBagCollection(tables=[EmbeddingBagConfig(name=f"t{i}", embedding_dim=dim, num_embeddings=10,
                                                             feature_names=[f"f{i}"]) for i in range(3)])


def _kjt(ids: list[int]) -> KeyedJaggedTensor:
    # one bag per feature per example; ids listed feature by feature for a batch of 2
    return KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2"], values=torch.tensor(ids), lengths=torch.ones(6, dtype=torch.long))


def test_dlrm_output_and_interaction_width():
    torch.manual_seed(0)
    m = DLRM(_ebc(), num_features=3, embedding_dim=4, dense_in=2, dense_arch=[8], over_arch=[6])
    out = m(torch.rand(2, 2), _kjt([1, 2, 3, 4, 5, 6]))
    assert out.shape == (2,)
    # over arch input: dense (D=4) + pairs among 4 vectors (3 sparse + dense) = 4 + 6
    assert m.over_arch.model[0]._mlp[0]._linear.in_features == 4 + 6
    assert torch.isfinite(out).all()


def test_dlrm_depends_on_ids_and_backpropagates_to_tables():
    torch.manual_seed(0)
    m = DLRM(_ebc(), num_features=3, embedding_dim=4, dense_in=2, dense_arch=[8], over_arch=[6])
    dense = torch.zeros(2, 2)
    a = m(dense, _kjt([1, 1, 2, 2, 3, 3]))
    b = m(dense, _kjt([1, 7, 2, 2, 3, 3]))
    assert a[0].item() == pytest.approx(b[0].item())      # example 0 unchanged
    assert a[1].item() != pytest.approx(b[1].item())      # example 1 got another f0 id
    a.sum().backward()
    grad = m.sparse.embedding_bags["t0"].weight.grad
    assert grad[1].abs().sum() > 0 and grad[5].abs().sum() == 0


def test_dlrm_without_dense_features():
    m = DLRM(_ebc(), num_features=3, embedding_dim=4, dense_in=0, dense_arch=[8], over_arch=[6])
    assert m(torch.zeros(2, 0), _kjt([1, 2, 3, 4, 5, 6])).shape == (2,)


def test_build_from_plan_refuses_mixed_dims():
    plan = EmbeddingPlan(tables=[TableSpec("a", ["a"], rows=10, dim=4), TableSpec("b", ["b"], rows=10, dim=8)])
    with pytest.raises(ModelError, match=r"dims \[4, 8\]"):
        build_ctr_model(plan, dense_in=1, cfg=ModelConfig(name="dlrm"))
    with pytest.raises(ModelError, match="not a CTR model"):
        build_ctr_model(plan, dense_in=1, cfg=ModelConfig(name="m2trec"))


def test_dlrm_concat_embeddings_feeds_the_pooled_embeddings_to_the_over_arch():
    torch.manual_seed(0)
    m = DLRM(_ebc(), num_features=3, embedding_dim=4, dense_in=2, dense_arch=[8], over_arch=[6], concat_embeddings=True)
    # dense (4) + pairs among 4 vectors (6) + the 3 pooled embeddings (3 x 4)
    assert m.over_arch.model[0]._mlp[0]._linear.in_features == 4 + 6 + 12
    out = m(torch.rand(2, 2), _kjt([1, 2, 3, 4, 5, 6]))
    assert out.shape == (2,) and torch.isfinite(out).all()
    # a first-order path: with the dense arch's output zeroed and the other tables' rows zero,
    # one table's row still moves the logit (the dot-only form would give a constant)
    with torch.no_grad():
        for p in m.dense_arch.parameters():
            p.zero_()
        for name, t in m.sparse.embedding_bags.items():
            t.weight.zero_()
        m.sparse.embedding_bags["t0"].weight[1] = 1.0
    a = m(torch.zeros(2, 2), _kjt([1, 2, 3, 3, 3, 3]))
    assert a[0] != a[1]


def test_build_ctr_model_concats_embeddings_by_default():
    assert ModelConfig().concat_embeddings is True


@pytest.mark.parametrize("name", ["dlrm", "dcn"])
def test_over_dropout_drops_over_arch_inputs_in_training_only(name: str):
    plan = EmbeddingPlan(tables=[TableSpec(f"t{i}", [f"f{i}"], rows=10, dim=4) for i in range(3)])
    torch.manual_seed(0)
    m = build_ctr_model(plan, dense_in=2, cfg=ModelConfig(name=name, over_dropout=0.5))
    assert m.over_dropout.p == 0.5
    seen: list[torch.Tensor] = []
    m.over_arch.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    dense, kjt = torch.rand(2, 2), _kjt([1, 2, 3, 4, 5, 6])
    m.train()
    a, b = m(dense, kjt), m(dense, kjt)
    assert not torch.equal(a, b)                                   # a new mask each training forward
    zeros = float((seen[0] == 0).float().mean())
    assert 0.3 < zeros < 0.7                                       # about half of the over arch's inputs dropped
    m.eval()
    assert torch.equal(m(dense, kjt), m(dense, kjt))               # evaluation: no dropout
    assert float((seen[-1] == 0).float().mean()) < 0.2                 # (a ReLU output may be 0 itself)
    assert build_ctr_model(plan, dense_in=2, cfg=ModelConfig(name=name)).over_dropout.p == 0.0   # default: off
    with pytest.raises(ValueError, match="less than 1"):
        ModelConfig(over_dropout=1.0)

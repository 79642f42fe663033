"""DCN-v2: a low-rank cross network over [dense, embeddings]."""

from __future__ import annotations

import torch
# one intra-op thread: on a loaded 2-core machine two spinning threads are ~20x slower
torch.set_num_threads(1)

from torchrec import KeyedJaggedTensor

from embeddings.spec import EmbeddingPlan, TableSpec
from models.dcn import DCNv2
from pipelines.runtime.config import ModelConfig
from pipelines.ctr.model import build_ctr_model


def test_dcn_from_plan_shapes_and_low_rank_layers():
    torch.manual_seed(0)
    plan = EmbeddingPlan(tables=[TableSpec(f"t{i}", [f"f{i}"], rows=20, dim=4) for i in range(3)])
    m = build_ctr_model(plan, dense_in=2, cfg=ModelConfig(name="dcn", cross_layers=3, low_rank=2, dense_arch=[8], over_arch=[8]))
    assert isinstance(m, DCNv2)
    cross = m.inter_arch.crossnet
    width = (3 + 1) * 4
    assert len(cross.V_kernels) == 3 and tuple(cross.V_kernels[0].shape) == (2, width)
    assert tuple(cross.W_kernels[0].shape) == (width, 2)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1", "f2"], values=torch.arange(9) % 20,
                                              lengths=torch.ones(9, dtype=torch.long))
    out = m(torch.rand(3, 2), kjt)
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_dcn_learns_an_xor_of_two_ids():
    """Two features whose XOR is the label: a cross network fits it (loss far below log 2)."""
    torch.manual_seed(0)
    plan = EmbeddingPlan(tables=[TableSpec("a", ["a"], rows=2, dim=4), TableSpec("b", ["b"], rows=2, dim=4)])
    m = build_ctr_model(plan, dense_in=0, cfg=ModelConfig(name="dcn", cross_layers=2, low_rank=4, dense_arch=[8], over_arch=[16]))
    a = torch.tensor([0, 0, 1, 1] * 8)
    b = torch.tensor([0, 1, 0, 1] * 8)
    y = (a ^ b).float()
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([a, b]), lengths=torch.ones(64, dtype=torch.long))
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(120):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(torch.zeros(32, 0), kjt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1

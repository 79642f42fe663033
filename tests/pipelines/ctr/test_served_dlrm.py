"""`served_dlrm.ServedDLRM`: a trained DLRM's logits without the over arch's concatenated input."""

from __future__ import annotations

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from models.dlrm import DLRM
from pipelines.ctr.served_dlrm import ServedDLRM


def _kjt(batch: int, features: int, rows: int) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(1)
    return KeyedJaggedTensor.from_lengths_sync(keys=[f"f{i}" for i in range(features)],
                                               values=torch.randint(0, rows, (batch * features,), generator=g),
                                               lengths=torch.ones(batch * features, dtype=torch.int64))


@pytest.mark.parametrize("concat,dense_in,over", [(True, 3, [8]), (False, 3, [8, 4]), (True, 0, [6, 5])])
def test_served_dlrm_gives_the_trained_modules_logits(concat, dense_in, over):
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10,
                                                            feature_names=["f0", "f1", "f2"])])
    m = DLRM(ebc, 3, 4, dense_in=dense_in, dense_arch=[8], over_arch=over, concat_embeddings=concat).eval()
    x, kjt = torch.rand(7, max(dense_in, 1)), _kjt(7, 3, 10)
    with torch.inference_mode():
        got, ref = ServedDLRM(m)(x, kjt), m(x, kjt)
    assert got.shape == (7,) and torch.allclose(got, ref, atol=1e-6, rtol=1e-6)
    assert not torch.equal(ref, torch.zeros(7))

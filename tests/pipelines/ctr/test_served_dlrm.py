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


def test_bf16_dots_stay_close_to_the_fp32_logits_and_the_cpu_flag_is_read_from_cpuinfo(tmp_path):
    from pipelines.ctr.served_dlrm import native_bf16

    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=50,
                                                            feature_names=[f"f{i}" for i in range(5)])])
    x, kjt = torch.rand(64, 3), _kjt(64, 5, 50)
    for concat in (True, False):   # the first layer's pooled columns read from the bf16 input, or none
        m = DLRM(ebc, 5, 8, dense_in=3, dense_arch=[8], over_arch=[8, 4], concat_embeddings=concat).eval()
        with torch.inference_mode():
            got, ref = ServedDLRM(m, bf16_dots=True)(x, kjt), m(x, kjt)
        err = (got - ref).abs().max().item()
        assert 0 < err < 1e-2 * ref.abs().max().item()   # rounded, and only by bf16's 8 mantissa bits
    (tmp_path / "a").write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    (tmp_path / "b").write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert native_bf16(str(tmp_path / "a")) and not native_bf16(str(tmp_path / "b"))
    assert not native_bf16(str(tmp_path / "missing"))

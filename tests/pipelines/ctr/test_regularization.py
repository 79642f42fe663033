"""CTR regularization settings (#13): `training.embedding_l2` (an L2 penalty on the looked-up embeddings, through
the fused FBGEMM backward) and `training.dense_weight_decay` (the dense optimizer's weight decay) reach the
training and shrink what they regularize; bad values are one-line config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embeddings.config import EmbeddingsConfig
from embeddings.sharding import dense_optimizer, fbgemm_model
from pipelines.ctr.loop import LookupPenalty
from pipelines.ctr.trainer import train_stage
from pipelines.runtime.config import ModelConfig, TrainConfig


def _cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(batch_size=256, epochs=1, max_steps=12, checkpoint_every=100, log_every=5, **kw)
    cfg.model.dense_arch, cfg.model.over_arch = [16], [16]
    cfg.ray.single_process = True
    return cfg


def _trained(encoded_ctr: dict, out: Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    out.mkdir()
    train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, cfg, EmbeddingsConfig(learning_rate=0.1),
                seed=0, show_progress=False)
    return torch.load(out / "model" / "model.pt", weights_only=True)


def _norm(sd: dict[str, torch.Tensor], tables: bool) -> float:
    return sum(float(v.float().norm() ** 2) for k, v in sd.items() if ("embedding_bags" in k) == tables) ** 0.5


@pytest.fixture(scope="module")
def initial(encoded_ctr, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The seed-0 model before any step (dense learning rates ~0: what training starts from)."""
    out = tmp_path_factory.mktemp("reg") / "init"
    out.mkdir()
    cfg = _cfg()
    cfg.dense_learning_rate = 1e-12
    train_stage({"vocab": encoded_ctr["vocab"], "plan": encoded_ctr["plan"]}, out, cfg, EmbeddingsConfig(learning_rate=1e-12),
                seed=0, show_progress=False)
    return torch.load(out / "model" / "model.pt", weights_only=True)


def test_embedding_l2_pulls_looked_up_rows_toward_zero_and_leaves_unseen_rows(encoded_ctr, initial, tmp_path: Path):
    plain = _trained(encoded_ctr, tmp_path / "plain", _cfg())
    l2 = _trained(encoded_ctr, tmp_path / "l2", _cfg(embedding_l2=1.0))
    tables = [k for k in plain if "embedding_bags" in k]
    assert tables
    seen = {k: (plain[k] != initial[k]).any(dim=1) for k in tables}
    for k in tables:
        # lazy: the rows no batch looked up keep their initial values in both runs
        assert torch.equal((l2[k] != initial[k]).any(dim=1), seen[k])
        assert torch.equal(l2[k][~seen[k]], initial[k][~seen[k]])

    def seen_norm(sd: dict[str, torch.Tensor]) -> float:
        return float(torch.cat([sd[k][seen[k]] for k in tables]).norm(dim=1).mean())

    # rowwise adagrad moves a looked-up row by up to ~lr per step: 12 steps at lr 0.1 take the seen rows from a
    # mean norm of ~0.10 at init to ~0.45 without the penalty; with it they stay at or below init (~0.08)
    assert seen_norm(l2) < seen_norm(initial) < 0.5 * seen_norm(plain)


def test_dense_weight_decay_shrinks_the_dense_parameters(encoded_ctr, tmp_path: Path):
    # Adam moves each weight by about the learning rate per step; with a decay that dominates the gradient the
    # 12 steps at 0.05 take the dense weights toward 0, where without it they grow
    plain = _trained(encoded_ctr, tmp_path / "plain", _cfg(dense_learning_rate=0.05))
    decayed = _trained(encoded_ctr, tmp_path / "wd", _cfg(dense_learning_rate=0.05, dense_weight_decay=50.0))
    assert _norm(decayed, False) < 0.5 * _norm(plain, False)


def test_lookup_penalty_is_l2_times_the_batch_mean_squared_norm_and_reaches_fbgemm():
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sparse = EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=5,
                                                                            feature_names=["f"])])

        def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
            return self.sparse(kjt).values()

    dmp = fbgemm_model(Model(), EmbeddingsConfig(learning_rate=0.1), torch.device("cpu"))
    penalty = LookupPenalty(dmp, 0.5)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([1, 3]), lengths=torch.tensor([1, 1]))
    pooled = dmp(kjt)
    before = pooled.detach().clone()
    p = penalty.penalty()
    assert float(p) == pytest.approx(0.5 * float(before.pow(2).sum(1).mean()), rel=1e-6)
    assert penalty.penalty() == 0.0                       # taken once per forward
    p.backward()                                          # the fused kernel updates rows 1 and 3 toward 0
    with torch.no_grad():
        after = dmp(kjt)
    assert penalty.penalty() == 0.0                       # no penalty from a no-grad (evaluation) forward
    assert (after.norm(dim=1) < before.norm(dim=1)).all()
    assert LookupPenalty(dmp, 0.0).penalty() == 0.0


def test_dense_optimizer_takes_the_weight_decay():
    opt = dense_optimizer(torch.nn.Linear(2, 1), lr=0.1, weight_decay=0.01)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01]


@pytest.mark.parametrize("field", ["embedding_l2", "dense_weight_decay"])
def test_regularization_settings_are_validated(field: str):
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        TrainConfig(**{field: -0.1})
    with pytest.raises(ValueError, match=f"training.{field}: only CTR models .* remove it from the config"):
        TrainConfig(model=ModelConfig(name="sasrec"), **{field: 0.1})

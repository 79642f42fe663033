"""The runtime's device choice, one-process group and the one dense optimizer of both loops."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from embeddings.sharding import dense_optimizer
from features.errors import UserError
from pipelines.runtime.distributed import broadcast_from_rank0, global_mean, local_process_group, resolve_device


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU is visible")
def test_cuda_without_a_gpu_is_a_one_line_user_error():
    with pytest.raises(UserError, match=r"^training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'$"):
        resolve_device("cuda")


@pytest.fixture
def no_process_group():
    """Earlier tests (embeddings' fbgemm_model without a group) leave this process's default group up."""
    if dist.is_initialized():
        dist.destroy_process_group()


def test_local_process_group_is_up_inside_the_block_only(no_process_group):
    assert not dist.is_initialized()
    with local_process_group():
        assert dist.get_world_size() == 1
        assert global_mean(torch.tensor(3.0), dist.get_world_size()) == 3.0
        assert broadcast_from_rank0([1, 2], dist.get_world_size()) == [1, 2]
    assert not dist.is_initialized()


def test_the_dense_optimizer_takes_every_parameter_of_a_model_without_fused_tables():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    opt = dense_optimizer(model, 0.1, "adagrad")
    assert isinstance(opt, torch.optim.Adagrad) and opt.param_groups[0]["lr"] == 0.1
    assert [p.shape for p in opt.param_groups[0]["params"]] == [p.shape for p in model.parameters()]
    with pytest.raises(UserError, match="training.dense_optimizer: 'sgd' is not a dense optimizer"):
        dense_optimizer(model, 0.1, "sgd")

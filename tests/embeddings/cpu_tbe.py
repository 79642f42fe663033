"""A small FBGEMM training TBE on CPU, as the DSL tests use it."""

from __future__ import annotations

import torch


def cpu_tbe(tables: list[tuple[int, int]], optimizer: str = "rowwise_adagrad", lr: float = 0.1,
            init: float | None = 0.5):
    """An FBGEMM `SplitTableBatchedEmbeddingBagsCodegen` on CPU with one table per (rows, dim) and a fused
    `optimizer` (rowwise_adagrad | sgd); weights uniform in [-init, init] drawn under seed 0 (None: FBGEMM's own).

    Example:
        >>> cpu_tbe([(20, 4)]).split_embedding_weights()[0].shape
        torch.Size([20, 4])
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)

    kind = {"rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "sgd": EmbOptimType.EXACT_SGD}[optimizer]
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU) for rows, dim in tables], optimizer=kind, learning_rate=lr)
    if init is not None:
        torch.manual_seed(0)
        tbe.init_embedding_weights_uniform(-init, init)
    return tbe

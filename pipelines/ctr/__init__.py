"""CTR training and scoring: encoded Parquet → KeyedJaggedTensor batches → DLRM / DCN-v2 under
TorchRec DistributedModelParallel, its checkpoints, evaluation, report and `sparserec predict`."""

"""Settings of training: model, loop, Ray scaling, checkpoints.

Two model families train with these settings: CTR (`dlrm`, `dcn`, `lr`: `pipelines/ctr/`) and sessions
(`m2trec`, `sasrec`, `gru4rec`, `popularity`: `pipelines/sessions/`). A field only one family's loop reads says
so (`used_by` in its schema: `only("ctr")`); every other field is read by both. A config that names its model
(`model.name`) and sets a field that model's family does not use is rejected when it is read, in one line naming
the field and the fix, so no setting is silently ignored.

Example:
    >>> TrainConfig().model.name
    'dlrm'
    >>> try:
    ...     TrainConfig(model=ModelConfig(name="gru4rec"), slice_features=5)
    ... except ValueError as err:
    ...     print(err.errors()[0]["msg"])
    Value error, training.slice_features: only CTR models (dlrm, dcn, lr) use it and gru4rec is a session model; remove it from the config
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LayerWidth = Annotated[int, Field(ge=1, description="units of one MLP layer")]


FAMILIES = {"ctr": ("dlrm", "dcn", "lr"), "sessions": ("m2trec", "sasrec", "gru4rec", "popularity")}
FAMILY_NAMES = {"ctr": "CTR models", "sessions": "session models"}


def only(family: str) -> dict[str, Any]:
    """`json_schema_extra` of a field only `family`'s training loop reads."""
    return {"used_by": [family]}


def family_of(model: str) -> str:
    """The family ('ctr' or 'sessions') of a model name.

    Example:
        >>> family_of("sasrec")
        'sessions'
    """
    return next(f for f, names in FAMILIES.items() if model in names)


def fields_not_used(cfg: BaseModel, family: str, prefix: str = "training") -> list[str]:
    """The dotted names of the fields set in `cfg` (explicitly, nested configs included) that `family` does not use."""
    out: list[str] = []
    for name in sorted(cfg.model_fields_set):
        extra = type(cfg).model_fields[name].json_schema_extra
        used_by = extra.get("used_by") if isinstance(extra, dict) else None
        value = getattr(cfg, name)
        if used_by is not None and family not in used_by:
            out.append(f"{prefix}.{name}")
        elif isinstance(value, BaseModel):
            out += fields_not_used(value, family, f"{prefix}.{name}")
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(_Strict):
    """Where training runs. `address=None` starts a local Ray (or uses RAY_ADDRESS when set)."""

    address: str | None = None
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    single_process: bool = Field(default=False, description="run the same loop in this process, without Ray")
    materialize_below_mb: float = Field(json_schema_extra=only("ctr"), 
        default=256.0, ge=0,
        description="Ray mode: a train split whose uncompressed size (Parquet footers, the model's columns) is below "
                    "this is read once into Ray's object store, one equal share per worker, and reused every epoch; "
                    "a larger split streams through Ray Data (read_parquet + streaming_split, re-read each epoch, "
                    "never all in memory). 0 always streams")
    worker_niceness: int | None = Field(
        default=0, ge=0, le=19,
        description="Unix niceness of the training workers. Ray starts worker processes at 15, so on a shared "
                    "machine a training step waits behind every normal process; 0 runs them like the driver. "
                    "None keeps Ray's default")
    controller_poll_s: float | None = Field(
        default=0.5, gt=0,
        description="seconds between Ray Train's polls of its workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, Ray's "
                    "default 2.0): every checkpoint report waits in its worker until the next poll, and a dead "
                    "worker is noticed at the next poll. None keeps Ray's default / the environment's value")
    quiet: bool = Field(
        default=True,
        description="turn off Ray Train services this run does not use, for the run only (the driver's environment "
                    "while fit() starts the controller, which passes it on; nothing cluster-wide): the preemption "
                    "watcher actor (RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0) and Ray Train's metrics export "
                    "(RAY_TRAIN_METRICS_ENABLED=0). Their start-up otherwise competes with the first steps for CPU")


class ModelConfig(_Strict):
    name: Literal["dlrm", "dcn", "lr", "m2trec", "sasrec", "gru4rec", "popularity"] = "dlrm"
    dense_arch: list[LayerWidth] = Field(json_schema_extra=only("ctr"), default_factory=lambda: [64, 32])
    over_arch: list[LayerWidth] = Field(json_schema_extra=only("ctr"), default_factory=lambda: [64, 32])
    cross_layers: int = Field(json_schema_extra=only("ctr"), default=2, ge=1)
    low_rank: int = Field(json_schema_extra=only("ctr"), default=16, ge=1)
    concat_embeddings: bool = Field(json_schema_extra=only("ctr"), default=True, description="dlrm: the over arch also sees the pooled embeddings "
                                    "(first-order terms) beside the pairwise dots; false is the dot-only DLRM")
    over_dropout: float = Field(json_schema_extra=only("ctr"), default=0.0, ge=0.0, lt=1.0, description="dlrm / dcn: "
                                "dropout on the over arch's input (interaction output and, for dlrm, the pooled "
                                "embeddings) during training; 0: none")
    # session models
    hidden: int = Field(json_schema_extra=only("sessions"), default=64, ge=1)
    layers: int = Field(json_schema_extra=only("sessions"), default=2, ge=1)
    heads: int = Field(json_schema_extra=only("sessions"), default=2, ge=1)
    dropout: float = Field(json_schema_extra=only("sessions"), default=0.1, ge=0.0, lt=1.0)
    pooling: Literal["mean", "last"] = Field(default="mean", json_schema_extra=only("sessions"))
    loss_weights: list[float] = Field(json_schema_extra=only("sessions"), default_factory=lambda: [1.0, 0.3, 0.3], description="next item, category, subcategory")
    hybrid_item_id_buckets: int = Field(json_schema_extra=only("sessions"), default=0, ge=0, description="0: item-ID free; >0 adds a hashed item-id table")
    item_ids: Literal["auto", "on", "off"] = Field(json_schema_extra=only("sessions"), 
        default="auto", description="m2trec: hybrid item-ID rows for training items, gated onto the metadata encoding "
        "(auto: for data with both warm and cold items the session train stage trains both and keeps the better on validation)")
    item_id_dropout: float = Field(json_schema_extra=only("sessions"), default=0.25, ge=0.0, lt=1.0, description="m2trec hybrid: share of items whose ID part is dropped per lookup in training")
    item_id_method: str = Field(json_schema_extra=only("sessions"), default="dense", description="item-ID table storage: dense or a plan compression method (hashing, qr, fp16, int8, int4)")
    item_id_params: dict[str, int | float] = Field(json_schema_extra=only("sessions"), default_factory=dict, description="item-ID table method parameters, e.g. {buckets: 4096} or {m: 64}")
    train_windows: bool = Field(json_schema_extra=only("sessions"), default=False, description="left-to-right models (gru4rec, sasrec, m2trec with causal: true "
                                "and pooling: last): train on windows of max_length + 1 items with a next-item loss at every "
                                "position, one pass per window instead of one per prefix")
    causal: bool = Field(json_schema_extra=only("sessions"), default=False, description="m2trec: left-to-right attention (as SASRec) instead of bidirectional")
    cold_offset: float = Field(json_schema_extra=only("sessions"), default=0.0, ge=0.0, description="m2trec hybrid: added at ranking to the scores of items "
                               "without an ID row (cold), to balance them against ID-carrying items; choose it on validation")
    rnn_hidden: int | None = Field(json_schema_extra=only("sessions"), default=None, ge=1, description="gru4rec: GRU state size (default 2 x hidden, RecBole's 128 for 64)")
    max_length: int = Field(json_schema_extra=only("sessions"), default=50, ge=2, description="session models: last items of a session kept as input")
    item_combine: Literal["sum", "concat"] = Field(json_schema_extra=only("sessions"), default="sum", description="m2trec: how attribute embeddings form an item")
    task_attributes: list[str] = Field(json_schema_extra=only("sessions"), default_factory=lambda: ["category", "subcategory"],
                                       description="m2trec: the categorical item attributes the extra heads predict")
    softmax: Literal["full", "sampled"] = Field(json_schema_extra=only("sessions"), default="sampled", description="session models: full or in-batch + sampled softmax")
    negatives: int = Field(json_schema_extra=only("sessions"), default=128, ge=0, description="sampled softmax: uniform negatives per batch (besides in-batch)")
    logq_correction: bool = Field(json_schema_extra=only("sessions"), default=True, description="sampled softmax: subtract log sampling probability")


class TrainConfig(_Strict):
    """Every setting of a training run; a field only one family uses says so (see the module docstring)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    dense_learning_rate: float = Field(default=1e-3, gt=0)
    grad_clip_norm: float | None = Field(default=10.0, gt=0)
    early_stopping_patience: int = Field(
        default=2, ge=0,
        description="stop after this many consecutive epochs whose validation score (CTR: AUC, sessions: Recall@K) "
                    "is not above the best so far by more than early_stopping_min_delta; 0 never stops early. "
                    "Either way the reported and exported model is the best validation epoch's")
    early_stopping_min_delta: float = Field(default=1e-4, ge=0, description="the smallest validation gain that counts "
                                                                            "as an improvement")
    shuffle: bool = Field(default=True, description="a new seeded order of the training rows every epoch (a function "
                                                     "of the run seed and the epoch); false keeps file order")
    shuffle_buffer_rows: int = Field(json_schema_extra=only("ctr"), 
        default=1_000_000, ge=1,
        description="rows shuffled together where the split is streamed (single process; Ray Data streams: the local "
                    "shuffle buffer); a split that fits is shuffled whole. Materialized Ray shares are always "
                    "shuffled whole")
    checkpoint_every: int = Field(default=200, ge=1, description="steps between checkpoints, besides the one after every "
                                  "epoch (sessions: `epoch_<done>_step_<step>`, resumed at the batch it had reached)")
    max_failures: int = Field(default=2, ge=0, description="Ray: times the worker group is restarted from the latest "
                              "checkpoint after a worker dies; a user error in a worker (a bad id, a budget too "
                              "small) is raised at once, never retried")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_k: list[int] = Field(json_schema_extra=only("sessions"), default_factory=lambda: [10, 20])
    ray: RayConfig = Field(default_factory=RayConfig)
    # both loops (pipelines/ctr/loop.py, pipelines/sessions/loop.py) unless a description says CTR
    embedding_l2: float = Field(json_schema_extra=only("ctr"), default=0.0, ge=0.0, description="CTR: L2 penalty on the "
                                "embeddings each batch looks up: the loss gains embedding_l2 x the batch mean of the "
                                "squared norm of a row's pooled embeddings (all features), so each looked-up row is pulled "
                                "toward 0 in proportion to how often it is seen. Works with every fused FBGEMM kernel "
                                "(the CPU rowwise-adagrad kernel ignores FBGEMM's own weight_decay). 0: none")
    dense_weight_decay: float = Field(json_schema_extra=only("ctr"), default=0.0, ge=0.0, description="CTR: L2 weight decay of the dense optimizer "
                                      "(torch Adam / Adagrad weight_decay) on the non-embedding parameters. 0: none")
    dense_optimizer: Literal["adam", "adagrad"] = Field(default="adam", description="CTR: the non-embedding parameters' "
                                                        "optimizer (tables use the fused one); sessions: all parameters'")
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps (all epochs together)")
    log_every: int = Field(default=20, ge=1, description="steps between loss records (metrics history.train) / progress updates")
    checkpoints_to_keep: int = Field(default=2, ge=1)
    slice_features: int = Field(json_schema_extra=only("ctr"), default=3, ge=0, description="CTR: features (by plan score, else plan order) for per-slice AUC")
    fail_at_step: int | None = Field(default=None, ge=1, description="testing: the last worker dies once at this step (Ray mode: SIGKILL of its own process; single process: raises)")

    @model_validator(mode="after")
    def _no_field_ignored(self) -> "TrainConfig":
        if "name" not in self.model.model_fields_set:   # the family is the named model's (`sessions train --model`)
            return self
        family = family_of(self.model.name)
        unused = fields_not_used(self, family)
        if unused:
            other = next(f for f in FAMILIES if f != family)
            raise ValueError(f"{unused[0]}: only {FAMILY_NAMES[other]} ({', '.join(FAMILIES[other])}) use it and "
                             f"{self.model.name} is a {FAMILY_NAMES[family][:-1]}; remove it from the config")
        return self

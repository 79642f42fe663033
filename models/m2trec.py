"""M2TRec: a metadata-aware, item-ID-free, multi-task session transformer (Shalaby et al., RecSys 2022).

Every item is embedded from its metadata only (one TorchRec EmbeddingBagCollection table per
attribute, looked up with a KeyedJaggedTensor; multi-valued attributes mean-pooled), so the
model's memory does not grow with the catalogue and an item never seen in training gets a
representation from its attributes. A session's items go through a Transformer encoder
(positions counted from the session's end, padding masked; bidirectional as in the paper, or
causal); the session representation (mean over positions as in the paper, or the last position) is scored by dot product against item
embeddings (next item) and feeds one classification head per task attribute (e.g. category,
subcategory), all trained together.

Hybrid mode (`item_ids=True`): items seen in training also get an item-ID embedding (one row per
training item, `models/item_id_table.py`, compressible like any plan table), added to the
metadata encoding through a learned gate, `rep = meta + sigmoid(a * log(1 + train count) + b) * id`
(per dimension), so rarely seen items lean on their metadata. Items never seen in training have
no ID row: their representation is exactly the metadata encoding. During training the ID part of
a random `item_id_dropout` share of the items is dropped (per lookup, inputs and candidates), so
the metadata path stays strong and metadata-only items compete with ID-carrying ones at ranking.

Example:
    >>> feats = ItemFeatures(categorical={"category": torch.tensor([0, 2, 2, 3])})
    >>> cfg = M2TRecConfig(categorical={"category": 4}, task_classes={"category": 4}, hidden=8, heads=2)
    >>> model = M2TRec(cfg, feats)
    >>> rep, tasks = model(torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    >>> rep.shape, tasks["category"].shape
    (torch.Size([2, 8]), torch.Size([2, 4]))
    >>> model.encode_catalogue(chunk_size=2).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from models.item_features import HASH_KEY, ItemFeatures
from models.item_id_table import ItemIdTable
from models.session_encoder import SessionTransformer


@dataclass
class M2TRecConfig:
    """Sizes of the metadata tables and of the transformer.

    `categorical` / `multi_valued`: attribute → vocabulary size (ids 0..size-1).
    `task_classes`: attribute → number of classes of an extra head (attributes of `categorical`).
    """

    categorical: dict[str, int]
    multi_valued: dict[str, int] = field(default_factory=dict)
    task_classes: dict[str, int] = field(default_factory=dict)
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    max_length: int = 50
    pooling: Literal["mean", "last"] = "mean"
    causal: bool = False
    combine: Literal["sum", "concat"] = "sum"
    hybrid_item_id_buckets: int = 0
    item_ids: bool = False
    item_id_dropout: float = 0.25
    item_id_method: str = "dense"
    item_id_params: dict = field(default_factory=dict)
    cold_offset: float = 0.0


class M2TRec(nn.Module):
    """Session → (representation for next-item scoring, logits per task attribute)."""

    def __init__(self, config: M2TRecConfig, catalogue: ItemFeatures, train_counts: torch.Tensor | None = None) -> None:
        """`train_counts` [catalogue rows]: occurrences of each item in training (needed with `item_ids`)."""
        super().__init__()
        self.config = config
        self.catalogue = catalogue
        h = config.hidden
        # N(0, 1/sqrt(h)) rather than TorchRec's default U(±1/sqrt(rows)), which vanishes for big tables
        init = partial(nn.init.normal_, std=h ** -0.5)
        tables = [EmbeddingBagConfig(name=f"t_{a}", embedding_dim=h, num_embeddings=n, feature_names=[a],
                                     pooling=PoolingType.SUM, init_fn=init) for a, n in config.categorical.items()]
        tables += [EmbeddingBagConfig(name=f"t_{a}", embedding_dim=h, num_embeddings=n, feature_names=[a],
                                      pooling=PoolingType.MEAN, init_fn=init) for a, n in config.multi_valued.items()]
        if config.hybrid_item_id_buckets:
            tables.append(EmbeddingBagConfig(name=f"t_{HASH_KEY}", embedding_dim=h, feature_names=[HASH_KEY],
                                             num_embeddings=config.hybrid_item_id_buckets, pooling=PoolingType.SUM,
                                             init_fn=init))
        self.n_features = len(tables)
        self.ebc = EmbeddingBagCollection(tables=tables)
        self.combine = nn.Linear(h * len(tables), h) if config.combine == "concat" else None
        self.item_norm = nn.LayerNorm(h)
        self.encoder = SessionTransformer(h, config.layers, config.heads, config.dropout, config.max_length,
                                          causal=config.causal, pooling=config.pooling)
        self.task_heads = nn.ModuleDict({a: nn.Linear(h, n) for a, n in config.task_classes.items()})
        self.ids: ItemIdTable | None = None
        if config.item_ids:
            if train_counts is None:
                raise ValueError("M2TRec(item_ids=True) needs train_counts (occurrences of each item in training)")
            self.ids = ItemIdTable(catalogue.size, train_counts.nonzero().squeeze(1), h,
                                   method=config.item_id_method, params=config.item_id_params)
            self.register_buffer("log_count", torch.log1p(train_counts.float()))
            self.gate_scale = nn.Parameter(torch.zeros(h))
            self.gate_bias = nn.Parameter(torch.zeros(h))

    def attach_catalogue(self, catalogue: ItemFeatures) -> None:
        """Score against another catalogue (e.g. one holding items released after training)."""
        self.catalogue = catalogue

    def item_repr(self, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings [n, hidden] of catalogue items `idx`: metadata encoding (+ gated item-ID row in hybrid mode)."""
        kt = self.ebc(self.catalogue.kjt(idx.reshape(-1), self.config.hybrid_item_id_buckets))
        x = kt.values()
        x = self.combine(x) if self.combine is not None else x.view(x.shape[0], self.n_features, -1).sum(1)
        x = self.item_norm(x)
        if self.ids is None:
            return x
        idx = idx.reshape(-1)
        gate = torch.sigmoid(self.log_count[idx, None] * self.gate_scale + self.gate_bias)
        id_part = gate * self.ids(idx)
        if self.training and self.config.item_id_dropout > 0:
            keep = torch.rand(idx.shape[0], 1, device=idx.device) >= self.config.item_id_dropout
            id_part = id_part * keep
        return x + id_part

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`items` [B, L] catalogue indices right-padded with 0, `lengths` [B] → (rep [B, H], {task: logits})."""
        uniq, inverse = torch.unique(items, return_inverse=True)
        emb = self.item_repr(uniq)[inverse]
        rep = self.encoder(emb, lengths)
        return rep, {a: head(rep) for a, head in self.task_heads.items()}

    def forward_all(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The representation after every position [B, L, H]; needs `causal=True` and `pooling="last"`."""
        uniq, inverse = torch.unique(items, return_inverse=True)
        return self.encoder.forward_all(self.item_repr(uniq)[inverse], lengths)

    @torch.no_grad()
    def encode_catalogue(self, chunk_size: int = 4096) -> torch.Tensor:
        """Embeddings of every catalogue row [N+1, H] (row 0 = padding), `chunk_size` items at a time."""
        n = self.catalogue.size
        device = next(self.parameters()).device
        parts = [self.item_repr(torch.arange(s, min(s + chunk_size, n), device=device)) for s in range(0, n, chunk_size)]
        return torch.cat(parts)

    def score_bias(self) -> torch.Tensor | None:
        """Added to every session's scores [N+1] at ranking: `cold_offset` for items without an ID row (hybrid), else None.

        Trained with ID dropout, metadata-only items score lower than ID-carrying ones; a small offset (chosen on
        validation) lifts cold items back without changing their order among themselves."""
        if self.ids is None or not self.config.cold_offset:
            return None
        return (self.ids.row_of == 0).float() * self.config.cold_offset

    def scorable(self) -> torch.Tensor:
        """Which catalogue rows can be scored: every item (row 0, padding, cannot)."""
        ok = torch.ones(self.catalogue.size, dtype=torch.bool)
        ok[0] = False
        return ok

    def embedding_bytes(self) -> int:
        """Bytes of the item-representation tables (metadata tables: independent of the catalogue size;
        plus the item-ID table in hybrid mode)."""
        meta = sum(p.numel() * p.element_size() for p in self.ebc.parameters())
        return meta + (self.ids.embedding_bytes() if self.ids is not None else 0)

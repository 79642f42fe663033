"""Item metadata of a catalogue as tensors, turned into KeyedJaggedTensors for any set of items.

Catalogue index 0 is padding; items are 1..N. Each categorical attribute is one id per item
(0 = missing, 1 = unknown); each multi-valued attribute is a bag of ids stored CSR-style
(`offsets`, `values`). `kjt(idx)` gathers the metadata of the items `idx` into one
KeyedJaggedTensor (one key per attribute; bag length 1 for categorical ones) so an
EmbeddingBagCollection embeds all attributes in one call.

Example:
    >>> feats = ItemFeatures(categorical={"category": torch.tensor([0, 2, 3])},
    ...                      multi_valued={"tokens": (torch.tensor([0, 0, 2, 3]), torch.tensor([4, 5, 6]))})
    >>> kjt = feats.kjt(torch.tensor([2, 1]))
    >>> kjt["tokens"].lengths().tolist(), kjt["tokens"].values().tolist()
    ([1, 2], [6, 4, 5])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

HASH_KEY = "item_id_hash"


@dataclass
class ItemFeatures:
    """Metadata of catalogue items 0..N (row 0 = padding) as tensors."""

    categorical: dict[str, torch.Tensor]
    multi_valued: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Rows including the padding row 0 (so the catalogue holds `size - 1` items)."""
        if self.categorical:
            return int(next(iter(self.categorical.values())).numel())
        return int(next(iter(self.multi_valued.values()))[0].numel() - 1)

    @property
    def keys(self) -> list[str]:
        return list(self.categorical) + list(self.multi_valued)

    def to(self, device: torch.device | str) -> "ItemFeatures":
        return ItemFeatures({k: v.to(device) for k, v in self.categorical.items()},
                            {k: (o.to(device), v.to(device)) for k, (o, v) in self.multi_valued.items()})

    def kjt(self, idx: torch.Tensor, hash_buckets: int = 0) -> KeyedJaggedTensor:
        """Metadata of items `idx` (1-D catalogue indices) as a KJT; `hash_buckets` > 0 adds a hashed id key."""
        idx = idx.reshape(-1)
        n = idx.numel()
        keys, values, lengths = [], [], []
        ones = torch.ones(n, dtype=torch.long, device=idx.device)
        for name, ids in self.categorical.items():
            keys.append(name)
            values.append(ids[idx])
            lengths.append(ones)
        for name, (offsets, vals) in self.multi_valued.items():
            start = offsets[idx]
            lens = offsets[idx + 1] - start
            # position of every gathered value: its bag's start plus its rank inside the bag
            bag_start_out = torch.cumsum(lens, 0) - lens
            within = torch.arange(int(lens.sum()), device=idx.device) - torch.repeat_interleave(bag_start_out, lens)
            keys.append(name)
            values.append(vals[torch.repeat_interleave(start, lens) + within])
            lengths.append(lens)
        if hash_buckets > 0:
            keys.append(HASH_KEY)
            values.append(hashed_ids(idx, hash_buckets))
            lengths.append(ones)
        return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))


def hashed_ids(idx: torch.Tensor, buckets: int) -> torch.Tensor:
    """A fixed multiplicative hash of catalogue indices into [0, buckets)."""
    return (idx.long() * 2654435761 + 97) % buckets

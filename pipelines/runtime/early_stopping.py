"""Early stopping, one rule for every training loop (CTR `pipelines/ctr/loop.py`, sessions `pipelines/sessions/loop.py`).

After each epoch the loop passes the validation score (higher is better: AUC, Recall@K). An epoch *improves*
when its score is above the best so far by more than `min_delta` (`training.early_stopping_min_delta`); the
first scored epoch always does. Training stops after `patience` consecutive epochs that do not improve
(`training.early_stopping_patience`; 0 never stops early). Whether it stops or runs out of epochs, the model
the loop reports and exports is the one of `best_epoch`. A NaN score (e.g. AUC of a one-class split) never
improves. The state is plain data, saved in every checkpoint, so a resumed run continues the count.

Example:
    >>> s = EarlyStopping()
    >>> [s.update(e, score, patience=2, min_delta=0.01) for e, score in enumerate([0.70, 0.75, 0.755, 0.74])]
    [True, True, False, False]
    >>> s.best_epoch, s.best, s.bad_epochs, s.stopped
    (1, 0.75, 2, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """The early-stopping state: the best score and its epoch, the non-improving epochs since, stopped or not."""

    best: float = -math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, epoch: int, score: float, patience: int, min_delta: float) -> bool:
        """Record `epoch`'s validation score; True when it is the new best (the loop then keeps its weights)."""
        if not math.isnan(score) and (self.best_epoch is None or score > self.best + min_delta):
            self.best, self.best_epoch, self.bad_epochs = float(score), int(epoch), 0
            return True
        self.bad_epochs += 1
        self.stopped = patience > 0 and self.bad_epochs >= patience
        return False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "EarlyStopping":
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})

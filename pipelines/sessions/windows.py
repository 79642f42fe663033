"""Training windows for left-to-right session models: one pass per window, a next-item target at every position.

A causal model (GRU4Rec) that reads a window once produces the same state at position t as it
would reading the prefix ending at t, so training on windows with a loss at every position gives
the same loss terms as one example per prefix (`SessionData.examples("train")`, RecBole's data
augmentation) at a fraction of the cost: a session of n items costs one pass of n - 1 steps
instead of n - 1 passes. A session longer than `max_length + 1` is cut from its end into windows
of `max_length + 1` items, consecutive windows sharing one item, so every next item is a target
exactly once; targets early in a later window see fewer than `max_length` items of history (the
prefix examples always see the last `max_length`).

Batches of similar length (`SessionWindows.bucket`): a batch is padded to its longest window, so on
data of mostly short sessions with a few long ones (Amazon Toys: 8.6 items on average, 1% of 40 or
more) random batches cost as if every window were long. The loop's random order is regrouped: within
each run of `span` batches the windows are sorted by length, cut into batches, and those batches
are put in a random order (taken from the epoch's order, so it stays a function of the seed).

Example:
    >>> w = training_windows([np.array([1, 2, 3, 4, 5, 6])], max_length=2)
    >>> w.items.tolist(), w.lengths.tolist(), w.targets.tolist()
    ([[4, 5], [2, 3], [1, 0]], [2, 2, 1], [[5, 6], [3, 4], [2, 0]])
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.sessions.data import SessionExamples


class SessionWindows(SessionExamples):
    """`SessionExamples` whose `targets` are [W, max_length]: its length is the number of windows."""

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, idx: torch.Tensor) -> "SessionWindows":
        return SessionWindows(self.items[idx], self.lengths[idx], self.targets[idx])

    def bucket(self, order: torch.Tensor, batch_size: int, span: int = 50) -> torch.Tensor:
        """`order` (a permutation of the windows) regrouped into batches of similar length, batches in random order.

        Example:
            >>> w = SessionWindows(torch.zeros(4, 3, dtype=torch.long), torch.tensor([3, 1, 3, 1]), torch.zeros(4, 3))
            >>> sorted(sorted(w.lengths[b].tolist()) for b in w.bucket(torch.tensor([0, 1, 2, 3]), 2).view(2, 2))
            [[1, 1], [3, 3]]
        """
        out = []
        chunk = span * batch_size
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[torch.argsort(self.lengths[part], stable=True)]
            batches = list(torch.split(part, batch_size))
            shuffle = torch.argsort(order[start:start + len(batches)])   # a random permutation drawn from the order
            out += [batches[k] for k in shuffle.tolist()]
        return torch.cat(out) if out else order


def training_windows(sessions: list[np.ndarray], max_length: int) -> SessionWindows:
    """Windows of `sessions`: `items` [W, max_length] inputs, `targets` [W, max_length] next items (0 = padding)."""
    rows: list[np.ndarray] = []
    for s in sessions:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_length - 1)
            rows.append(s[start:end])
            end = start + 1
    items = torch.zeros(len(rows), max_length, dtype=torch.long)
    targets = torch.zeros(len(rows), max_length, dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for i, w in enumerate(rows):
        n = len(w) - 1
        items[i, :n] = torch.from_numpy(np.asarray(w[:-1]))
        targets[i, :n] = torch.from_numpy(np.asarray(w[1:]))
        lengths[i] = n
    return SessionWindows(items, lengths, targets)

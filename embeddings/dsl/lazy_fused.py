"""The lazy DSL update on whole local float32 CPU tables, through the fused kernels of `lazy_kernels`.

The same rule and the same results as `LazyDSLController`'s torch-op update (see `embeddings.dsl.lazy`),
with each job done in one pass: the changed rows and the new snapshot of the row-wise state in one
pass over that state; the projection, the prune candidates (active |w| <= H) and the growth
candidates (inactive |w| > G, left unzeroed until chosen or not) in one pass over the changed rows,
prefetched a few rows ahead (or one pass over the whole table when most rows changed); the exact
n-th smallest / largest by a histogram of the float bits (counted while the cache is compacted
and the scan appends, one pass to collect the bin holding the n-th), ties to the lower (table,
position) as in `pick`; the exchange written in the pass that picks it (pruned cache entries
zeroed and the cache compacted; chosen growth candidates masked in, the rest zeroed). The prune
cache lives in growable numpy buffers (entries of changed rows dropped in place). The thresholds
come from the controller's own samples (`_set_grow_bound`, `_set_bound`), so both paths choose the
same weights. Measured in `embeddings.dsl.modes` (2.0-3.8x faster than the torch ops).

Example (the growable candidate list the kernels append to):
    >>> b = Buffer(2)
    >>> b.reserve(5); (b.pos.shape[0], b.n)
    (5, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

# embeddings.dsl.lazy.LazyDSLController, not imported: that module imports this one (no import circle, even for types)
LazyDSLController = Any

K = None  # embeddings.dsl.lazy_kernels, imported at the first update (importing numba costs ~1.6 s of CPU)


def available() -> bool:
    """True when the kernels can run (numba importable); imports them on the first call."""
    global K
    if K is None:
        import embeddings.dsl.lazy_kernels as lazy_kernels

        K = lazy_kernels
    return K.available()

__all__ = ["Buffer", "fusable", "update", "available"]

STREAM_SHARE = 0.6  # above this share of a table's rows changed, one streaming pass over the table replaces the row list
CACHE_LOW = 1.5    # a cache holding less than this many times the exchange is refilled by this update's pass
CACHE_FACTOR = 4.0  # the prune cache bound H holds about this many times the exchange (torch path: 2): a larger
                    # cache costs little here and saves the whole-table rebuilds (300k x 64, one-id bags: 2 of 5 updates at 2, none at 4)


class Buffer:
    """A growable list of (flat position int64, value float32) in numpy arrays; `n` entries are live."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        self.pos = np.empty(capacity, np.int64)
        self.val = np.empty(capacity, np.float32)
        self.n = 0

    @property
    def bits(self) -> np.ndarray:
        """The values' float32 bits (a uint32 view)."""
        return self.val.view(np.uint32)

    def reserve(self, extra: int) -> None:
        """Room for `extra` more entries (capacity at least doubles when it grows)."""
        need = self.n + extra
        if need > self.pos.shape[0]:
            cap = max(need, 2 * self.pos.shape[0])
            pos, val = np.empty(cap, np.int64), np.empty(cap, np.float32)
            pos[:self.n], val[:self.n] = self.pos[:self.n], self.val[:self.n]
            self.pos, self.val = pos, val


def fusable(ctrl: "LazyDSLController", weights: dict[str, Tensor]) -> bool:
    """True when the kernels can run on these tables: numba present, CPU float32 contiguous weights,
    CPU bool contiguous masks, no element-wise optimizer state (FBGEMM's CPU optimizers have none:
    SGD and row-wise Adagrad; the torch path zeroes such state at pruned weights), and the
    controller's `fused` switch on."""
    if not (getattr(ctrl, "fused", True) and available()):
        return False
    key = tuple((name, w.data_ptr(), w.dtype, w.device, ctrl.masks[name].data_ptr()) for name, w in weights.items())
    seen = ctrl.__dict__.get("_fusable")
    if seen is not None and seen[0] == key:  # asked at every update: the answer is kept per set of tensors
        return seen[1]
    ctrl._fusable = (key, _fusable(ctrl, weights))
    return ctrl._fusable[1]


def _fusable(ctrl: "LazyDSLController", weights: dict[str, Tensor]) -> bool:
    for name, w in weights.items():
        m = ctrl.masks[name]
        if w.device.type != "cpu" or w.dtype != torch.float32 or not w.is_contiguous():
            return False
        if m.device.type != "cpu" or m.dtype != torch.bool or not m.is_contiguous():
            return False
        if any(st.kind == "element" for st in ctrl.tables[name].optimizer_states()):
            return False
    return True


def update(ctrl: "LazyDSLController", weights: dict[str, Tensor], n: int) -> int:
    """Project, prune and grow at most `n` weights (the controller's rule); returns how many grew."""
    K.warm()
    names = list(weights)
    w_np = {k: w.detach().numpy() for k, w in weights.items()}
    m_np = {k: ctrl.masks[k].numpy().view(np.uint8) for k in names}
    states = {k: ctrl.tables[k].optimizer_states() for k in names}  # one call per update (FBGEMM builds views)
    changed = _changed_rows(ctrl, w_np, {k: next((st.tensor for st in v if st.kind == "row"), None) for k, v in states.items()})
    if n <= 0:  # the schedule has ended: project only, no cache to keep up
        ctrl._cache = None
        for name, rows in changed.items():
            _scan(w_np[name], m_np[name], rows, 0.0, 0.0, None, None)
        return 0
    ctrl._set_grow_bound(weights, {k: None if r is None else torch.from_numpy(r) for k, r in changed.items()}, n)
    full = ctrl._cache is None or any(rows is None for rows in changed.values())
    # a cache about to run short: this update's pass goes over whole tables and refills it, instead of
    # a row-list pass now and a whole-table rebuild after it (same choice either way)
    full = full or sum(ctrl._cache[k].n for k in names) < CACHE_LOW * n
    hist = np.zeros(K.BINS, np.int64)  # the prune cache's histogram, kept up with every change to it
    kept = {k: 0 for k in names}
    if full:  # a pass over whole tables anyway: a new cache bound, the cache rebuilt in the same pass
        ctrl._set_bound(weights, n, CACHE_FACTOR)
        ctrl.full_scans += 1
        ctrl._cache = _buffers(ctrl, "cache", names)
    else:
        for name, rows in changed.items():
            kept[name] = _drop_rows(ctrl._cache[name], rows, w_np[name].shape, hist)
    growth = _buffers(ctrl, "growth", names)
    for name, rows in changed.items():
        _scan(w_np[name], m_np[name], None if full else rows, ctrl._bound, ctrl._grow_above, ctrl._cache[name], growth[name])
    for name in names:  # the rescanned entries
        c = ctrl._cache[name]
        K.histogram(c.bits, kept[name], c.n, False, hist)
    gbufs = [growth[k] for k in names]
    ghist = np.zeros(K.BINS, np.int64)
    for g in gbufs:
        K.histogram(g.bits, 0, g.n, True, ghist)
    gcut = _cut(gbufs, n, True, ghist)
    k = min(n, sum(g.n for g in gbufs))
    if sum(ctrl._cache[name].n for name in names) < k:
        hist = _rebuild_cache(ctrl, weights, w_np, m_np, k)
    pcut = _cut([ctrl._cache[name] for name in names], k, False, hist)
    counts = ctrl._counts()
    grown_total = 0
    for t, name in enumerate(names):
        wf, mf = w_np[name].reshape(-1), m_np[name].reshape(-1)
        cache = ctrl._cache[name]
        pruned = 0
        if pcut is not None:
            cache.n, pruned = K.prune(cache.pos, cache.val, cache.n, *_cut_args(pcut, t), wf, mf)
        grown = 0
        if gcut is not None:
            g = growth[name]
            cache.reserve(g.n)
            grown, cache.n = K.grow(g.pos, g.val, g.n, *_cut_args(gcut, t), wf, mf, cache.pos, cache.val, cache.n,
                                    np.float32(ctrl._bound))
        counts[name] += grown - pruned
        grown_total += grown
    return grown_total


_ALL = (np.uint32(0xFFFFFFFF), 1 << 62, 1 << 62)  # a cut that chooses every entry


def _cut(bufs: list[Buffer], k: int, largest: bool, hist: np.ndarray) -> tuple[np.uint32, int, int] | None:
    """The cut choosing the `k` entries of smallest (or largest) |value| over the buffers in order,
    ties to the lower (buffer, position): (key, buffer, position) of the k-th, or None for none;
    `hist` counts the buffers' keys (`K.histogram`)."""
    total = sum(b.n for b in bufs)
    if k <= 0:
        return None
    if k >= total:
        return _ALL
    cum = np.cumsum(hist)
    bin_ = int(np.searchsorted(cum, k))
    below = int(cum[bin_] - hist[bin_])
    keys = np.empty(int(hist[bin_]), np.uint32)
    pos = np.empty(keys.shape[0], np.int64)
    table = np.empty(keys.shape[0], np.int64)
    c = 0
    for t, b in enumerate(bufs):
        c2 = K.collect_bin(b.pos, b.bits, b.n, largest, np.uint32(bin_), keys, pos, c)
        table[c:c2] = t
        c = c2
    i = np.lexsort((pos, table, keys))[k - below - 1]
    return keys[i], int(table[i]), int(pos[i])


def _cut_args(cut: tuple[np.uint32, int, int], t: int) -> tuple[np.uint32, int, int, int]:
    """The kernels' form of a cut for buffer `t`: (key, t before the cut's buffer, t is it, position)."""
    key, table, pos = cut
    return key, int(t < table), int(t == table), pos


def _buffers(ctrl: "LazyDSLController", kind: str, names) -> dict[str, Buffer]:
    """The controller's kept buffers of `kind` (their capacity reused across updates), emptied."""
    kept = ctrl.__dict__.setdefault("_fused_buffers", {}).setdefault(kind, {})
    for name in names:
        kept.setdefault(name, Buffer()).n = 0
    return {name: kept[name] for name in names}


def _changed_rows(ctrl: "LazyDSLController", w_np: dict[str, np.ndarray],
                  row_states: dict[str, Tensor | None]) -> dict[str, np.ndarray | None]:
    """Sorted rows of each table whose row-wise optimizer state moved since the snapshot, the snapshot
    moved along in the same pass (the update leaves row-wise state alone). None: the whole table (no
    such state, no snapshot yet, or more than `STREAM_SHARE` of its rows)."""
    out: dict[str, np.ndarray | None] = {name: None for name in w_np}
    first = ctrl._row_state is None
    if first:
        ctrl._row_state = {}
    for name, state in row_states.items():
        if state is None:
            continue
        snap = ctrl._row_state.get(name)
        if snap is None or snap.shape != state.shape:
            ctrl._row_state[name] = state.clone()
            continue
        if state.dtype == torch.float32 and state.device.type == "cpu" and state.is_contiguous() and snap.is_contiguous():
            buf = np.empty(state.shape[0], np.int64)
            rows = buf[:K.changed_rows(state.numpy(), snap.numpy(), buf)]
        else:
            rows = state.ne(snap).nonzero().squeeze(1).numpy()
            snap.copy_(state)
        if not first:
            out[name] = None if rows.shape[0] > STREAM_SHARE * state.shape[0] else rows
    return out


def _scan(w: np.ndarray, m: np.ndarray, rows: np.ndarray | None, bound: float, grow_above: float,
          cache: Buffer | None, growth: Buffer | None, keep_above: float | None = None) -> None:
    """One pass over `rows` (None: the whole table): prune candidates appended to `cache`, growth
    candidates to `growth` (each when given), inactive weights zeroed but those above `keep_above`
    (default: the growth candidates when collecting them, else none); buffers grow as needed."""
    whole = rows is None
    rows_ = np.empty(0, np.int64) if whole else rows
    total = w.shape[0] if whole else rows_.shape[0]
    dim = w.shape[1]
    if keep_above is None:
        keep_above = grow_above if growth is not None else np.inf
    c = cache if cache is not None else Buffer(0)
    g = growth if growth is not None else Buffer(0)
    start = 0
    while True:
        if cache is not None:
            c.reserve(dim)
        if growth is not None:
            g.reserve(dim)
        start, c.n, g.n = K.scan(w, m, rows_, start, whole, np.float32(bound), np.float32(grow_above),
                                 cache is not None, growth is not None, True, np.float32(keep_above),
                                 c.pos, c.val, c.n, g.pos, g.val, g.n)
        if start >= total:
            return
        if cache is not None:
            c.reserve(c.pos.shape[0])  # double and go on from the row it stopped at
        if growth is not None:
            g.reserve(g.pos.shape[0])


def _drop_rows(cache: Buffer, rows: np.ndarray, shape: tuple[int, int], hist: np.ndarray) -> int:
    """Drop the cache entries of `rows` (they are rescanned), counting the rest into `hist`; returns
    how many are kept."""
    dim = shape[1]
    if rows.shape[0] == 0:
        K.histogram(cache.bits, 0, cache.n, False, hist)
        return cache.n
    hit = np.zeros(shape[0], np.uint8)
    hit[rows] = 1
    shift = dim.bit_length() - 1 if dim & (dim - 1) == 0 else -1
    cache.n = K.drop_rows(cache.pos, cache.val, cache.n, hit, dim, shift, hist)
    return cache.n


def _rebuild_cache(ctrl: "LazyDSLController", weights: dict[str, Tensor], w_np: dict[str, np.ndarray],
                   m_np: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Streaming passes over every table until the cache holds at least `n` (as `_rebuild_cache` of
    the torch path: the bound from a sample, widened when the sample misled); returns the new
    cache's histogram."""
    factor = CACHE_FACTOR
    while True:
        ctrl._set_bound(weights, n, factor)
        for name in weights:
            cache = ctrl._cache[name]
            cache.n = 0
            _scan(w_np[name], m_np[name], None, ctrl._bound, 0.0, cache, None, keep_above=ctrl._grow_above)  # growth candidates wait
        ctrl.full_scans += 1
        if sum(ctrl._cache[k].n for k in weights) >= n or ctrl._bound == float("inf"):
            hist = np.zeros(K.BINS, np.int64)
            for name in weights:
                K.histogram(ctrl._cache[name].bits, 0, ctrl._cache[name].n, False, hist)
            return hist
        factor *= 2

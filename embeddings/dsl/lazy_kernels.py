"""Fused CPU kernels of the lazy DSL update (numba): each reads a table, a cache or a candidate list once.

The lazy update (`embeddings.dsl.lazy`) written in torch ops makes a dozen passes over the rows it
visits (|w|, two comparisons, two `nonzero`, two `index_select`, a float mask, a multiply, an
`index_copy_`): 5-9 ns per weight. These kernels do the same work in one pass per job, at the
speed of the memory (on a 2-core EPYC: 0.3 ns per weight streaming a whole table, about 1 ns per
weight of scattered rows):
- `changed_rows`: the rows whose row-wise optimizer state moved since the snapshot (the snapshot
  follows in the same pass);
- `scan`: over rows (a list, or the whole table): collect active weights with |w| <= H (the prune
  cache), inactive weights with |w| > G (growth candidates), and zero the inactive weights;
- `drop_rows`: remove the cache entries of the given rows (they are rescanned), counting the rest
  into the histogram of the selection;
- `histogram` / `collect_bin`: an exact k-th smallest (or largest) by the float bits of |value|
  (non-negative floats order as their bit patterns), ties to the lower (table, position): count
  by the top 16 bits, collect the one bin holding the k-th, sort that bin alone;
- `prune` / `grow`: write the exchange in the pass that picks it (mask and weight of the chosen
  cache entries to 0, the rest compacted; chosen growth candidates back to their value, the small
  ones into the cache).

They run on CPU numpy views of the torch tensors (float32 weights, the bool mask viewed as uint8);
CUDA tables and other dtypes take the torch-op path. Without numba installed `available()` is
False and everything takes the torch-op path, with the same results.

Example:
    >>> import numpy as np
    >>> w = np.array([[0.5, -0.01, 0.2], [0.03, 0.0, -0.9]], np.float32)
    >>> m = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)
    >>> c = (np.empty(6, np.int64), np.empty(6, np.float32)); g = (np.empty(6, np.int64), np.empty(6, np.float32))
    >>> stop, nc, ng = scan(w, m, np.empty(0, np.int64), 0, True, np.float32(0.3), np.float32(0.02), True, True, True, np.float32(np.inf), *c, 0, *g, 0)
    >>> (stop, c[0][:nc].tolist(), g[0][:ng].tolist(), w[1].tolist())
    (2, [2, 4], [3], [0.0, 0.0, -0.8999999761581421])
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: without it the lazy update runs in torch ops
    import numba
    from llvmlite import ir
    from numba.core import types as _types
    from numba.cpython.unsafe.numbers import trailing_zeros
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

    def trailing_zeros(x: int) -> int:
        return (int(x) & -int(x)).bit_length() - 1

    def prefetch(array, offset) -> None:
        """A hint only: nothing to do in Python."""
else:
    @intrinsic
    def prefetch(typingctx, array, offset):
        """Ask for the cache line at byte `offset` of `array` (LLVM's prefetch, for a write, high
        locality): the scan walks rows known in advance, and fetching a few rows ahead hides the
        memory latency of scattered rows (20-30% of the scan on this CPU)."""
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            byte = ir.IntType(8).as_pointer()
            ptr = builder.gep(builder.bitcast(data, byte), [args[1]])
            i32 = ir.IntType(32)
            fn = builder.module.declare_intrinsic("llvm.prefetch", [byte], ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]))
            builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return _types.void(array, offset), codegen

__all__ = ["available", "changed_rows", "scan", "drop_rows", "histogram", "collect_bin", "prune", "grow", "warm", "BINS"]

_AHEAD = 8  # rows prefetched ahead in a scan of a row list (4-32 measured alike; none: 20-30% slower)
BINS = 1 << 16  # histogram bins: the top 16 bits of a float32 (sign, exponent, 7 mantissa bits)


def available() -> bool:
    """True when numba is importable (the fused CPU path can run)."""
    return numba is not None


def _jit(fn):
    """No-Python compile, cached on disk (first call compiles, later processes load it); without
    numba the plain Python function (same results, far slower: the controller then uses torch ops)."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)


@_jit
def changed_rows(state, snap, out):
    """Write the rows with `state != snap` to `out` (in order) and copy them into `snap`; returns
    how many."""
    n = 0
    for r in range(state.shape[0]):
        s = state[r]
        if s != snap[r]:
            out[n] = r
            n += 1
            snap[r] = s
    return n


@_jit
def _flags16(wr, mr, s, bound, grow_above, keep_above):
    """Bit masks of 16 weights `wr[s:s+16]` (a constant trip count the compiler turns into vector
    compares and mask moves): (active and |w| <= bound, inactive and |w| > grow_above, inactive,
    w != 0 and |w| <= keep_above)."""
    c = np.uint32(0)
    g = np.uint32(0)
    z = np.uint32(0)
    for j in range(16):
        x = wr[s + j]
        a = abs(x)
        on = np.uint32(mr[s + j])
        off = on ^ np.uint32(1)
        c |= (on & np.uint32(a <= bound)) << np.uint32(j)
        g |= (off & np.uint32(a > grow_above)) << np.uint32(j)
        z |= (off & np.uint32(x != 0) & np.uint32(a <= keep_above)) << np.uint32(j)
    return c, g, z


@_jit
def scan(w, m, rows, start, whole, bound, grow_above, prune, grow, zero, keep_above,
         cpos, cval, nc, gpos, gval, ng):
    """One pass over rows `rows[start:]` (or table rows `start:` when `whole`) of `w` (float32
    [rows, dim]) under mask `m` (uint8, 1 = active): append active weights with |w| <= `bound`
    (flat position, |w|) to `cpos`/`cval` from `nc` when `prune`; inactive weights with |w| >
    `grow_above` (position, signed w) to `gpos`/`gval` from `ng` when `grow`; zero the inactive
    weights with |w| <= `keep_above` (`w * 0`, as the torch path) when `zero` (the update keeps its
    growth candidates: `grow` gives the chosen their mask bit and zeroes the rest, so the chosen
    are not written twice). Stops before a row that could overflow a buffer. Returns (index of the next row to scan, nc, ng): the next index is the row count when done.

    Per 64 columns of a row, three 64-bit masks (prune candidate, growth candidate, nonzero
    inactive) built 16 weights at a time (vector compares; 3x faster than flag bytes packed by
    multiplies, 5x faster than a branch per weight); candidates are then visited by their set bits
    (a random mask would mispredict one branch in five), and only rows with a nonzero inactive
    weight are written."""
    dim = w.shape[1]
    total = w.shape[0] if whole else rows.shape[0]
    one = np.uint64(1)
    row_bytes = dim * 4
    for i in range(start, total):
        if (prune and nc + dim > cpos.shape[0]) or (grow and ng + dim > gpos.shape[0]):
            return i, nc, ng
        if not whole and i + _AHEAD < total:  # a list of rows: fetch the one _AHEAD rows on
            q = rows[i + _AHEAD]
            for c in range(0, row_bytes, 64):
                prefetch(w, q * row_bytes + c)
            for c in range(0, dim, 64):
                prefetch(m, q * dim + c)
        r = i if whole else rows[i]
        base = r * dim
        for c0 in range(0, dim, 64):
            width = min(64, dim - c0)
            wr = w[r, c0:c0 + width]
            mr = m[r, c0:c0 + width]
            bc = np.uint64(0)
            bg = np.uint64(0)
            bz = np.uint64(0)
            full = width - width % 16
            for s in range(0, full, 16):
                c, g, z = _flags16(wr, mr, s, bound, grow_above, keep_above)
                sh = np.uint64(s)
                bc |= np.uint64(c) << sh
                bg |= np.uint64(g) << sh
                bz |= np.uint64(z) << sh
            for j in range(full, width):
                x = wr[j]
                a = abs(x)
                on = np.uint64(mr[j])
                off = on ^ one
                sh = np.uint64(j)
                bc |= (on & np.uint64(a <= bound)) << sh
                bg |= (off & np.uint64(a > grow_above)) << sh
                bz |= (off & np.uint64(x != 0) & np.uint64(a <= keep_above)) << sh
            if prune:
                while bc:
                    j = trailing_zeros(bc)
                    cpos[nc] = base + c0 + j
                    cval[nc] = abs(wr[j])
                    nc += 1
                    bc &= bc - one
            if grow:
                while bg:
                    j = trailing_zeros(bg)
                    gpos[ng] = base + c0 + j
                    gval[ng] = wr[j]
                    ng += 1
                    bg &= bg - one
            if zero and bz:
                for j in range(width):
                    x = wr[j]
                    wr[j] = x * (mr[j] | (abs(x) > keep_above))
    return total, nc, ng


@_jit
def drop_rows(pos, val, n, hit, dim, shift, hist):
    """Keep (in order, in place) the first `n` entries whose row `pos // dim` (`pos >> shift` when
    `shift` >= 0: dim is a power of two) has `hit[row] == 0`, and add the kept ones to `hist` (as
    `histogram`, smallest first); returns how many are kept. Branch-free: every entry is written,
    the cursor moves when it is kept."""
    bits = val.view(np.uint32)
    k = 0
    for i in range(n):
        p = pos[i]
        b = bits[i]
        row = p >> shift if shift >= 0 else p // dim
        keep = 1 - hit[row]
        pos[k] = p
        bits[k] = b
        k += keep
        hist[_key(b, False) >> 16] += keep
    return k


@_jit
def _key(bits, flip):
    """Sort key of |v| from the float32 bits of v: the bits without the sign (non-negative floats
    order as their bits), complemented for a largest-first selection."""
    b = bits & np.uint32(0x7FFFFFFF)
    return np.uint32(0xFFFFFFFF) - b if flip else b


@_jit
def histogram(bits, start, n, flip, hist):
    """Add the top 16 key bits of values `start:n` (float32 bits, a uint32 view) to `hist` (BINS
    int64 counters)."""
    for i in range(start, n):
        hist[_key(bits[i], flip) >> 16] += 1


@_jit
def collect_bin(pos, bits, n, flip, b, keys, out_pos, k):
    """Append (key, position) of the first `n` entries whose key lies in bin `b` from `k`; returns k."""
    for i in range(n):
        key = _key(bits[i], flip)
        if (key >> 16) == b:
            keys[k] = key
            out_pos[k] = pos[i]
            k += 1
    return k


@_jit
def _chosen(key, p, cut, before, same, cut_pos):
    """key < cut, or key == cut and (table, position) <= (cut table, `cut_pos`) (`before`: this table
    precedes the cut's, `same`: it is the cut's)."""
    return (key < cut) | ((key == cut) & ((before | (same & (p <= cut_pos))) != 0))


@_jit
def prune(pos, val, n, cut, before, same, cut_pos, w, m):
    """The chosen of the first `n` cache entries (smallest first: see `_chosen`) are pruned: weight
    and mask to 0 on the flat views `w`, `m`; the rest stay in place, in order. Returns (kept, pruned).
    (Prefetching the chosen entries' lines gained nothing: the cache is in ascending runs of
    positions, which the hardware prefetcher follows.)"""
    bits = val.view(np.uint32)
    k = 0
    o = 0
    for i in range(n):
        p = pos[i]
        b = bits[i]
        if _chosen(_key(b, False), p, cut, before, same, cut_pos):
            m[p] = 0
            w[p] = 0.0
            o += 1
        else:
            pos[k] = p
            bits[k] = b
            k += 1
    return k, o


@_jit
def grow(pos, val, n, cut, before, same, cut_pos, w, m, cpos, cval, nc, bound):
    """The first `n` growth candidates (the scan left them unzeroed): the chosen (largest |w| first:
    see `_chosen`) grow, keeping the value they trained to (mask to 1), and those with |w| <= `bound`
    join the prune cache at `nc`; the others are zeroed (`w * 0`, as the scan zeroes). Returns (grown, nc)."""
    bits = val.view(np.uint32)
    o = 0
    for i in range(n):
        p = pos[i]
        if _chosen(_key(bits[i], True), p, cut, before, same, cut_pos):
            m[p] = 1
            o += 1
            a = abs(val[i])
            if a <= bound:
                cpos[nc] = p
                cval[nc] = a
                nc += 1
        else:
            w[p] = w[p] * 0.0
    return o, nc


_warm = False


def warm() -> None:
    """Compile (or load from the disk cache) every kernel for the argument types the update passes,
    once per process, so that no update after the first pays for it."""
    global _warm
    if _warm or numba is None:
        return
    i64, f32, u32, u8 = np.int64, np.float32, np.uint32, np.uint8
    w, m = np.zeros((2, 2), f32), np.zeros((2, 2), u8)
    pos, val, idx = np.zeros(4, i64), np.zeros(4, f32), np.zeros(1, i64)
    changed_rows(np.zeros(2, f32), np.zeros(2, f32), np.zeros(2, i64))
    scan(w, m, idx, 0, False, f32(0), f32(0), True, True, True, f32(0), pos, val, 0, pos.copy(), val.copy(), 0)
    hist = np.zeros(BINS, i64)
    drop_rows(pos, val, 0, np.zeros(2, u8), 2, 1, hist)
    histogram(val.view(u32), 0, 0, False, hist)
    collect_bin(pos, val.view(u32), 0, False, u32(0), np.zeros(1, u32), idx, 0)
    prune(pos, val, 0, u32(0), 0, 0, 0, w.reshape(-1), m.reshape(-1))
    grow(pos, val, 0, u32(0), 0, 0, 0, w.reshape(-1), m.reshape(-1), pos.copy(), val.copy(), 0, f32(0))
    _warm = True

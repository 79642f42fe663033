"""`VocabIndex`: a vocabulary's ids found through 64-bit string hashes give exactly `pyarrow.compute.index_in`'s."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.ctr.vocab_index import VocabIndex, string_hashes


def _reference(known: list[str], ids: np.ndarray, values: pa.Array) -> np.ndarray:
    pos = pc.index_in(values, value_set=pa.array(known, pa.string()))
    return np.array([ids[p] if p is not None else 1 for p in pos.to_pylist()], dtype=np.int64)


def test_ids_match_index_in_for_mixed_lengths_unicode_empty_and_sliced_arrays():
    rng = np.random.default_rng(0)
    known = ["", "a", "ab", "ba", "é", "日本", "x" * 200] + [f"{i:x}" * int(rng.integers(1, 5)) for i in range(5000)]
    known = list(dict.fromkeys(known))
    assert len(known) > 4096
    ids = np.arange(2, 2 + len(known))
    idx = VocabIndex(pa.array(known), ids)
    assert idx.pandas is None and not idx.small    # the hash table, not a fallback
    queries = [known[i] for i in rng.integers(0, len(known), size=500)] + ["zz", "abab", "x" * 199, "日", "aa"]
    values = pa.array(["pad", *queries]).slice(1)  # an offset into the buffers
    np.testing.assert_array_equal(idx.lookup(values, unknown=1), _reference(known, ids, values))
    assert idx.lookup(pa.array(["ab", "ba", "", "b"]), unknown=1).tolist() == [4, 5, 2, 1]


def test_a_vocabulary_listing_a_value_twice_keeps_its_first_id(monkeypatch):
    import pipelines.ctr.vocab_index as vi

    small = VocabIndex(pa.array(["a", "b", "a"]), np.array([2, 3, 4]))
    monkeypatch.setattr(vi, "SMALL", 2)
    large = VocabIndex(pa.array(["a", "b", "a"]), np.array([2, 3, 4]))
    assert small.small and large.pandas is not None
    for idx in (small, large):
        assert idx.lookup(pa.array(["a", "b", "c"]), unknown=1).tolist() == [2, 3, 1]


def test_a_small_vocabulary_uses_index_in_with_the_same_ids():
    known = [f"v{i}" for i in range(100)]
    idx = VocabIndex(pa.array(known), np.arange(2, 102))
    assert idx.small and idx.lookup(pa.array(["v5", "nope", "v99"]), unknown=1).tolist() == [7, 1, 101]


def test_hashes_are_the_same_in_every_call_and_differ_by_order_and_length():
    h = string_hashes(pa.array(["ab", "ba", "ab\x00", "", None]))
    assert len(set(h.tolist())) == 4 and h[3] == h[4]   # null hashes as the empty string
    np.testing.assert_array_equal(string_hashes(pa.array(["ab", "ba"])), h[:2])

"""Typed raw rows (the ingest stage's layout) → the encoded rows a trained CTR model reads.

The vocab stage encodes in Spark; scoring new rows uses the same rules in pyarrow / numpy, read
from what that stage wrote: `vocab/` Parquet (`feature`, `value`, `id`: a value not in it → id 1,
unknown; a missing value → id 0), `schema.json` (`label`, `dense`, `categorical`, `multi_valued`,
`dense_transforms` per column, or the older single `dense_transform`; `buckets`: a dense column's
quantile bucket ids, `<col>__bucket`). Multi-valued bags: each value mapped the same way, a null or empty list → [0].

Example:
    >>> import pyarrow as pa
    >>> vocab = pa.table({"feature": ["C1", "C1"], "value": ["a", "b"], "id": [2, 3]})
    >>> enc = RowEncoder.from_tables(vocab, {"label": "y", "dense": ["I1"], "categorical": ["C1"]})
    >>> out = enc.encode(pa.table({"y": [1, 0, 1], "I1": [0.0, None, -3.0], "C1": ["b", "zz", None]}))
    >>> out.column("C1").to_pylist(), out.column("I1").to_pylist(), out.column("y").to_pylist()
    ([3, 1, 0], [0.0, 0.0, 0.0], [1, 0, 1])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipelines.ctr.run_files import stage_json
from pipelines.ctr.vocab_index import VocabIndex
from pipelines.runtime.errors import EncodedDataError

MISSING_ID, UNKNOWN_ID = 0, 1
INDEX_CACHE = ("cache", "vocab_index")  # under the run folder: the vocabularies' hash indexes, memory-mapped
LOG1P = "log1p(max(x,0)), missing -> 0"


def log1p_clipped(x: np.ndarray) -> np.ndarray:
    """The vocab stage's dense transform: log1p(max(x, 0)), missing (NaN) → 0, as float32.

    Example:
        >>> log1p_clipped(np.array([np.nan, -1.0, np.e - 1])).tolist()
        [0.0, 0.0, 1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.log1p(np.maximum(np.nan_to_num(x, nan=0.0), 0.0))
    return np.where(np.isnan(x), 0.0, out).astype(np.float32)


def dense_transforms(schema: dict[str, Any], source: str = "schema.json") -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Column → transform of raw doubles (NaN = missing) into the float32 the model was trained on.

    Per-column records (`dense_transforms`, `features.numeric.DenseTransform`) are applied with
    `features.numeric.apply_dense`, the vocab stage's own pure function; a schema without them
    holds the one string `dense_transform` of older vocab stages (`LOG1P`). Anything else is
    refused rather than guessed."""
    records = schema.get("dense_transforms") or {}
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for c in schema.get("dense", []):
        if c in records:
            from features.numeric import DenseTransform, apply_dense

            try:
                t = DenseTransform.from_dict(records[c])
            except (KeyError, ValueError) as err:
                raise EncodedDataError(f"{source}: dense_transforms.{c} cannot be read ({err}); re-run the vocab stage") from None
            out[c] = partial(apply_dense, t=t)
            continue
        how = schema.get("dense_transform", LOG1P)
        if how != LOG1P:
            raise EncodedDataError(f"{source}: dense column '{c}' has no dense_transforms record and dense_transform is "
                                   f"{how!r}, which predict does not know; re-run the vocab stage of this version")
        out[c] = log1p_clipped
    return out


def bucket_sources(schema: dict[str, Any]) -> dict[str, tuple[str, list[float]]]:
    """Bucket feature (e.g. `I1__bucket`) → (its raw dense column, the train quantile splits)."""
    return {r["bucket_column"]: (c, [float(x) for x in r.get("bucket_splits") or []])
            for c, r in (schema.get("dense_transforms") or {}).items() if r.get("bucket_column")}


def id_features(schema: dict[str, Any]) -> list[str]:
    """The features looked up in a vocabulary: the single-valued categorical ones, then the multi-valued ones.

    Example:
        >>> id_features({"categorical": ["C1", "tags"], "multi_valued": ["tags"]})
        ['C1', 'tags']
    """
    multi = list(schema.get("multi_valued", []))
    return [*[c for c in schema["categorical"] if c not in multi], *multi]


def ensure_index_cache(vocab_dir: Path) -> bool:
    """The run's vocabulary index cache is there and current, written now when it was not (see
    `RowEncoder.write_index_cache`); False when it cannot be."""
    vocab_dir = Path(vocab_dir)
    schema = stage_json(vocab_dir, "schema.json", also=("vocab",), stage="vocab")
    return RowEncoder._from_cache(vocab_dir, schema) is not None or RowEncoder.load(vocab_dir).write_index_cache(vocab_dir)


def vocab_stamp(vocab_dir: Path) -> dict[str, Any]:
    """What identifies a vocab stage's output: each `vocab/` file's name, size and mtime, `schema.json`'s digest."""
    vocab_dir = Path(vocab_dir)
    files = sorted(p for p in (vocab_dir / "vocab").rglob("*") if p.is_file())
    return {"files": [[str(p.relative_to(vocab_dir)), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
            "schema": hashlib.sha256((vocab_dir / "schema.json").read_bytes()).hexdigest()}


@dataclass
class RowEncoder:
    """Vocabularies (feature → (values, ids)) and the schema of a run's vocab stage."""

    label: str
    dense: list[str]
    single: list[str]
    multi: list[str]
    vocab: dict[str, tuple[pa.Array, np.ndarray]]
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]]
    buckets: dict[str, tuple[str, list[float]]] = field(default_factory=dict)
    _index: dict[str, VocabIndex] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_tables(cls, vocab: pa.Table, schema: dict[str, Any], source: str = "schema.json") -> "RowEncoder":
        maps = {}
        feats = vocab.column("feature")
        for f in id_features(schema):
            part = vocab.filter(pc.equal(feats, f))
            maps[f] = (part.column("value").combine_chunks().cast(pa.string()),
                       part.column("id").to_numpy(zero_copy_only=False).astype(np.int64))
        return cls._of_schema(schema, source, maps)

    @classmethod
    def _of_schema(cls, schema: dict[str, Any], source: str, vocab: dict[str, tuple[pa.Array, np.ndarray]],
                   index: dict[str, VocabIndex] | None = None) -> "RowEncoder":
        """The encoder of `schema.json` with these vocabularies (and, from the cache, their built indexes)."""
        multi = list(schema.get("multi_valued", []))
        single = [c for c in schema["categorical"] if c not in multi]
        return cls(label=schema["label"], dense=list(schema["dense"]), single=single, multi=multi, vocab=vocab,
                   transforms=dense_transforms(schema, source), buckets=bucket_sources(schema), _index=index or {})

    @classmethod
    def load(cls, vocab_dir: Path) -> "RowEncoder":
        """From a vocab stage folder (`vocab/` Parquet + `schema.json`), or from the run's index cache
        (`write_index_cache`) when it holds every vocabulary of this very stage output."""
        vocab_dir = Path(vocab_dir)
        schema = stage_json(vocab_dir, "schema.json", also=("vocab",), stage="vocab")
        cached = cls._from_cache(vocab_dir, schema)
        if cached is not None:
            return cached
        table = pads.dataset(str(vocab_dir / "vocab"), format="parquet").to_table(columns=["feature", "value", "id"])
        return cls.from_tables(table, schema, str(vocab_dir / "schema.json"))

    def write_index_cache(self, vocab_dir: Path) -> bool:
        """Build every vocabulary's hash index and write them under `<run>/cache/vocab_index/` with a stamp of the
        vocab stage's files (names, sizes, mtimes, schema.json's digest), so each model process of a later
        `load` memory-maps them (shared pages, no Parquet read, no hashing) instead of building its own. False
        when the folder cannot be written or a vocabulary needs the pandas fallback (then processes build).

        Example::

            RowEncoder.load(Path("runs/r/vocab")).write_index_cache(Path("runs/r/vocab"))   # -> True
            RowEncoder.load(Path("runs/r/vocab")).index("C1")   # memory-mapped from runs/r/cache/vocab_index/C1
        """
        vocab_dir = Path(vocab_dir)
        cache = vocab_dir.parent.joinpath(*INDEX_CACHE)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            names = [*self.single, *self.multi]
            for i, f in enumerate(names):
                if not self.index(f).save(tmp / str(i)):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
            (tmp / "stamp.json").write_text(json.dumps({"stamp": vocab_stamp(vocab_dir), "features": names}) + "\n")
            shutil.rmtree(cache, ignore_errors=True)
            tmp.rename(cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

    @classmethod
    def _from_cache(cls, vocab_dir: Path, schema: dict[str, Any]) -> "RowEncoder | None":
        cache = vocab_dir.parent.joinpath(*INDEX_CACHE)
        try:
            got = json.loads((cache / "stamp.json").read_text())
            if got["stamp"] != vocab_stamp(vocab_dir):
                return None
            index = {f: VocabIndex.open(cache / str(i)) for i, f in enumerate(got["features"])}
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None
        if sorted(index) != sorted(id_features(schema)):
            return None
        return cls._of_schema(schema, str(vocab_dir / "schema.json"), {f: (ix.known, ix.ids) for f, ix in index.items()},
                              index)

    def source(self, feature: str) -> str:
        """The raw column a model feature is read from (a bucket feature reads its dense column)."""
        return self.buckets[feature][0] if feature in self.buckets else feature

    def index(self, feature: str) -> VocabIndex:
        """`feature`'s vocabulary as a hash index of its values and their ids, built on first use and kept (a value
        listed twice maps to its first id, as `pyarrow.compute.index_in` does).

        Example:
            >>> enc = RowEncoder.from_tables(pa.table({"feature": ["C1"] * 3, "value": ["a", "b", "a"], "id": [2, 3, 4]}),
            ...                              {"label": "y", "dense": [], "categorical": ["C1"]})
            >>> enc.index("C1").lookup(pa.array(["a", "b", "c"]), unknown=UNKNOWN_ID).tolist()
            [2, 3, 1]
        """
        if feature not in self._index:
            self._index[feature] = VocabIndex(*self.vocab[feature])
        return self._index[feature]

    def _ids(self, feature: str, values: pa.Array) -> np.ndarray:
        """Ids of `values` (unseen → UNKNOWN_ID, null → MISSING_ID): each distinct value of the batch is looked up
        once in the kept hash index (a million-value vocabulary is not re-hashed per batch)."""
        enc = values.cast(pa.string()).dictionary_encode()
        if len(enc.dictionary) == 0:
            return np.full(len(values), MISSING_ID, dtype=np.int64)
        distinct = self.index(feature).lookup(enc.dictionary, UNKNOWN_ID)
        out = distinct[pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)]
        if enc.null_count:
            out[enc.indices.is_null().to_numpy(zero_copy_only=False)] = MISSING_ID
        return out

    def _bags(self, feature: str, col: pa.Array) -> pa.Array:
        col = col.cast(pa.list_(pa.string()))
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        ids = self._ids(feature, pc.list_flatten(col))
        empty = lengths == 0  # a null or empty list is the bag [0]
        lengths = np.where(empty, 1, lengths)
        values = np.empty(int(lengths.sum()), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values[offsets[:-1][empty]] = MISSING_ID
        values[np.repeat(~empty, lengths)] = ids
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))

    def encode(self, rows: pa.Table, features: list[str] | None = None) -> pa.Table:
        """Encoded columns of `rows` (label int32 when present, dense float32, ids int64 / list<int64>)."""
        feats = features if features is not None else [*self.single, *self.buckets, *self.multi]
        cols: dict[str, pa.Array] = {}
        if self.label in rows.column_names:
            cols[self.label] = pc.cast(rows.column(self.label), pa.int32()).combine_chunks()
        for c in self.dense:
            x = pc.cast(rows.column(c), pa.float64()).to_numpy(zero_copy_only=False)
            cols[c] = pa.array(self.transforms[c](x.astype(np.float64)))
        for f in feats:
            if f in self.buckets:
                from features.numeric import bucket_ids

                src, splits = self.buckets[f]
                cols[f] = pa.array(bucket_ids(rows.column(src), splits))
                continue
            col = rows.column(f).combine_chunks()
            cols[f] = self._bags(f, col) if f in self.multi else pa.array(self._ids(f, col))
        return pa.table(cols)

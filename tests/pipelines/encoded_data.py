"""A small pandas version of the `vocab` stage's CTR output (docs/stages.md), for tests and benchmarks.

Writes `encoded/train|validation|test/part-0.parquet` (label int32, dense float32 = log1p(max(x,0))
with missing → 0, categorical int64 ids: 0 missing, 1 rare/unseen, 2.. by train count desc, ties
by value) and `schema.json`; the time-ordered split is 80/10/10. Also builds a dense
`EmbeddingPlan` with one table per feature.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embeddings.spec import EmbeddingPlan, TableSpec


def encode_ctr_frame(df: pd.DataFrame, out: Path, label: str, dense: list[str], categorical: list[str],
                     timestamp: str, min_count: int = 2, parts: int = 1, multi: list[str] = ()) -> dict:
    """Encode a raw CTR frame into `out/encoded/*` and `out/schema.json`; return the schema.

    `multi` columns hold lists of strings; they become list<int64> id columns (multi-hot bags)."""
    out = Path(out)
    df = df.sort_values(timestamp, kind="stable").reset_index(drop=True)
    n = len(df)
    cuts = [0, int(n * 0.8), int(n * 0.9), n]
    splits = {s: df.iloc[cuts[i]:cuts[i + 1]] for i, s in enumerate(("train", "validation", "test"))}
    vocabs: dict[str, dict] = {}
    for c in [*categorical, *multi]:
        col = splits["train"][c].dropna()
        counts = (col.explode().dropna() if c in multi else col).astype(str).value_counts()
        counts = counts[counts >= min_count]
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        vocabs[c] = {v: i + 2 for i, (v, _) in enumerate(order)}
    unseen: dict[str, dict[str, int]] = {}
    for s, part in splits.items():
        cols: dict[str, pa.Array] = {label: pa.array(part[label].to_numpy().astype(np.int32))}
        for c in dense:
            x = pd.to_numeric(part[c], errors="coerce").to_numpy(dtype=np.float64)
            cols[c] = pa.array(np.where(np.isnan(x), 0.0, np.log1p(np.maximum(np.nan_to_num(x), 0.0))).astype(np.float32))
        unseen[s] = {}
        for c in categorical:
            raw = part[c]
            ids = raw.astype(str).map(vocabs[c]).fillna(1).astype(np.int64).to_numpy()
            ids[raw.isna().to_numpy()] = 0
            unseen[s][c] = int((ids == 1).sum())
            cols[c] = pa.array(ids)
        for c in multi:
            voc = vocabs[c]
            cols[c] = pa.array([[voc.get(str(v), 1) for v in (vals if isinstance(vals, (list, tuple, np.ndarray)) else [])]
                                for vals in part[c]], pa.list_(pa.int64()))
        cols[timestamp] = pa.array(part[timestamp].to_numpy().astype(np.int64))
        table = pa.table(cols)
        folder = out / "encoded" / s
        folder.mkdir(parents=True, exist_ok=True)
        step = -(-table.num_rows // parts)
        for k in range(parts):
            pq.write_table(table.slice(k * step, step), folder / f"part-{k:05d}.parquet")
    schema = {"label": label, "dense": dense, "categorical": [*categorical, *multi], "multi_valued": list(multi),
              "vocab_sizes": {c: len(v) + 2 for c, v in vocabs.items()},
              "rows": {s: len(p) for s, p in splits.items()}, "unseen": unseen, "timestamp": timestamp}
    (out / "schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return schema


def dense_plan(schema: dict, dim: int = 8, features: list[str] | None = None) -> EmbeddingPlan:
    """One dense table per categorical feature sized by its vocabulary."""
    feats = features or schema["categorical"]
    return EmbeddingPlan(tables=[TableSpec(name=f"t_{c}", features=[c], rows=schema["vocab_sizes"][c], dim=dim,
                                           bytes=schema["vocab_sizes"][c] * dim * 4) for c in feats])


def encode_generated_ctr(raw_dir: Path, out: Path, features: list[str] | None = None, min_count: int = 2) -> dict:
    """Encode the output of `features.synthetic.generate("ctr", ...)` (no malformed rows)."""
    truth = json.loads((Path(raw_dir) / "truth.json").read_text())
    df = pd.read_csv(Path(raw_dir) / truth["file"], sep="\t", dtype={c: "string" for c in truth["categorical"]})
    cats = features or truth["categorical"]
    return encode_ctr_frame(df, out, "label", truth["dense"], cats, truth["timestamp"], min_count=min_count)

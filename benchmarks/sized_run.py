"""A trained CTR run with its embedding tables sized up to the generator's full cardinalities, for benchmarks
that need production-sized tables (lookups that leave the CPU cache) without training on millions of rows.

A small run trained on generated CTR rows holds only the values its training rows showed often enough
(about 1,000 rows per table for 20,000 rows). `size_up` copies the run and, for every categorical column,
adds the generator's whole value domain (`features.synthetic.ctr.CATEGORICAL`: up to 1M values a column,
the same `hex_names` the generator writes) to the vocabulary with new ids after the trained ones, and grows
the table to match: each new row is a copy of a randomly chosen trained row of that table (so the new rows
have the trained rows' value distribution; an id's score means nothing, its lookup costs what a trained
row's does). Dense layers, dense transforms and the trained rows are kept as they are. The copy drops
`embeddings.pt` (it would describe the small tables); `as-trained` / `fp32` / `int8` / `int4` / `eager`
serving build everything from `model.pt`.

Example::

    sizes = size_up(Path("runs/tiny"), Path("runs/sized"), seed=0)
    sizes["t_C23"]["rows"], sizes["total"]["fp32_bytes"]
    # -> (1000002, ...)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch


def generator_domains() -> dict[str, np.ndarray]:
    """Every value the CTR generator can write, per categorical column (`hex_names` of 0 .. cardinality-1)."""
    from features.synthetic.common import hex_names
    from features.synthetic.ctr import CATEGORICAL

    return {c.name: hex_names(np.arange(c.cardinality), int(c.name[1:]) * 7919) for c in CATEGORICAL}


def size_up(run: Path, out: Path, seed: int = 0, domains: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Copy `run` to `out` with every table of a single-feature dense plan grown to its feature's whole value
    domain (see module doc); returns rows and fp32 bytes per table and in total."""
    run, out = Path(run), Path(out)
    domains = generator_domains() if domains is None else domains
    rng = np.random.default_rng(seed)
    shutil.rmtree(out, ignore_errors=True)
    (out / "train" / "model").mkdir(parents=True)
    shutil.copytree(run / "vocab", out / "vocab", ignore=shutil.ignore_patterns("vocab", "encoded"))
    vocab = pads.dataset(str(run / "vocab" / "vocab"), format="parquet").to_table(columns=["feature", "value", "id"])
    info = json.loads((run / "train" / "model" / "model.json").read_text())
    state = torch.load(run / "train" / "model" / "model.pt", weights_only=True, map_location="cpu")
    parts, sizes = [vocab], {}
    for t in info["plan"]["tables"]:
        if t["method"] != "dense" or len(t["features"]) != 1:
            raise ValueError(f"table {t['name']}: size_up grows dense single-feature tables only")
        f = t["features"][0]
        key = next(k for k in state if k.endswith(f"embedding_bags.{t['name']}.weight"))
        weight = state[key]
        known = vocab.filter(pa.compute.equal(vocab.column("feature"), f)).column("value").to_numpy(zero_copy_only=False)
        new = domains.get(f, np.array([], dtype=str))
        new = new[~np.isin(new, known.astype(str))]
        rows = weight.shape[0]
        if len(new):
            parts.append(pa.table({"feature": pa.array([f] * len(new)), "value": pa.array(new.tolist()),
                                   "id": pa.array(np.arange(rows, rows + len(new), dtype=np.int64))}))
            # trained rows of known values (ids 2 .. rows-1), resampled
            pick = torch.from_numpy(rng.integers(min(2, rows - 1), rows, size=len(new)))
            state[key] = torch.cat([weight, weight[pick]])
        t["rows"] = int(state[key].shape[0])
        t["bytes"] = t["rows"] * t["dim"] * 4
        sizes[t["name"]] = {"rows": t["rows"], "trained_rows": rows, "fp32_bytes": t["bytes"]}
    info["plan"]["fp32_bytes"] = sum(s["fp32_bytes"] for s in sizes.values())
    sizes["total"] = {"rows": sum(s["rows"] for s in sizes.values()), "fp32_bytes": info["plan"]["fp32_bytes"]}
    (out / "vocab" / "vocab").mkdir()
    pq.write_table(pa.concat_tables([p.cast(vocab.schema) for p in parts]), out / "vocab" / "vocab" / "part-00000.parquet")
    (out / "train" / "model" / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    torch.save(state, out / "train" / "model" / "model.pt")
    (out / "sized_up.json").write_text(json.dumps({"from": str(run), "seed": seed, "tables": sizes}, indent=2) + "\n")
    return sizes

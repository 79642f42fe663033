"""Wide data through the vocab stage: seconds for 2,000 columns (1,000 categorical + 999 dense + label) x 3,000 rows.

The stage encodes single-valued columns `ENCODE_BATCH` per Spark plan with the lineage cut between
batches. The baseline is the same stage with every column joined in one plan (the shape that did not
finish in 20 minutes at 2,000 columns), measured at `--baseline-columns` where it still finishes,
beside ours at that width: the ratio is baseline / ours.

    .venv/bin/python benchmarks/wide_vocab.py                                   # 2000 columns, baseline at 200
    .venv/bin/python benchmarks/wide_vocab.py --columns 400 --baseline-columns 400

Outputs (the generated ingest folders, the vocab outputs, result.json) go to benchmarks/out/wide_vocab/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "wide_vocab"


def make_ingest(folder: Path, rows: int, columns: int, seed: int) -> tuple[list[str], list[str]]:
    """An ingest output (`data/` Parquet) with label `y`, columns // 2 categorical (C*) and the rest dense (D*)."""
    rng = np.random.default_rng(seed)
    n_cat = columns // 2
    n_dense = columns - 1 - n_cat
    cols: dict[str, pa.Array] = {"y": pa.array(rng.integers(0, 2, rows).astype(np.int32))}
    for j in range(n_cat):
        card = int(rng.choice([5, 50, 500]))
        cols[f"C{j}"] = pa.array(np.char.add("v", rng.integers(0, card, rows).astype(str)).tolist(), pa.string())
    for j in range(n_dense):
        x = rng.exponential(10.0, rows)
        x[rng.random(rows) < 0.05] = np.nan
        cols[f"D{j}"] = pa.array(x, pa.float64(), from_pandas=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), folder / "data" / "part-0.parquet")
    return [f"C{j}" for j in range(n_cat)], [f"D{j}" for j in range(n_dense)]


def run_vocab(spark, rows: int, columns: int, seed: int, one_plan: bool) -> float:
    """Seconds of the vocab stage on generated wide data (`one_plan`: every column joined in one plan)."""
    import features.vocab as vocab
    from features.config import ColumnRoles, DatasetConfig, VocabConfig

    folder = OUT / f"{columns}x{rows}"
    cat, dense = make_ingest(folder / "ingest", rows, columns, seed)
    out = folder / ("vocab_one_plan" if one_plan else "vocab")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ds = DatasetConfig(path=folder, kind="ctr", roles=ColumnRoles(label="y", dense=dense, categorical=cat))
    saved = vocab.ENCODE_BATCH
    vocab.ENCODE_BATCH = 10**9 if one_plan else saved
    try:
        t0 = time.perf_counter()
        vocab.build_vocab({"ingest": folder / "ingest"}, out, ds, VocabConfig(min_count=1, split_seed=seed), spark)
        return time.perf_counter() - t0
    finally:
        vocab.ENCODE_BATCH = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--columns", type=int, default=2000)
    ap.add_argument("--baseline-columns", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from features.config import SparkConfig
    from features.spark import spark_session

    spark = spark_session(SparkConfig(master="local[2]", driver_memory="4g", shuffle_partitions=4,
                                      conf={"spark.ui.enabled": "false"}))
    OUT.mkdir(parents=True, exist_ok=True)
    run_vocab(spark, 200, 20, args.seed, one_plan=False)   # warm-up (JIT, first Spark jobs)
    result = {"rows": args.rows, "seed": args.seed, "columns": args.columns,
              "seconds": round(run_vocab(spark, args.rows, args.columns, args.seed, one_plan=False), 1)}
    print(f"vocab stage, {args.columns} columns x {args.rows} rows: {result['seconds']} s")
    b = args.baseline_columns
    ours = run_vocab(spark, args.rows, b, args.seed, one_plan=False)
    base = run_vocab(spark, args.rows, b, args.seed, one_plan=True)
    result["baseline"] = {"columns": b, "ours_seconds": round(ours, 1), "one_plan_seconds": round(base, 1),
                          "ratio": round(base / ours, 2)}
    print(f"{b} columns x {args.rows} rows: ours {ours:.1f} s, every column in one plan {base:.1f} s, "
          f"ratio {base / ours:.2f}")
    (OUT / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()

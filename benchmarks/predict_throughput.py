"""Predict throughput: rows/s of `sparserec predict`'s scoring in fp32 / int8 / int4 serving (FBGEMM IntNBit
inference tables) against the eager PyTorch model of the same checkpoint, in one process and on Ray Data
with 2 model actors.

A small run is trained first by the real stages (Spark ingest and vocab, a dense plan with every
categorical column, single-process training: tests/pipelines/predict_run.py), then `--raw-rows`
new generated rows are parsed once by the run's ingest rules (`pipelines.ctr.predict_input`) and tiled
to `--rows` rows (default 1M) of parsed Parquet, so every mode scores the very same rows. The timed part is
the scoring phase of `predict` (read parsed rows, encode with the vocabularies, score, write Parquet),
one torch thread per process; Ray's start-up is outside it (printed apart), Ray Data's actor pool
start-up is inside, and also measured apart by scoring one batch per actor first ("after it": rows/s
of the rest, the rate a long input converges to).

Targets (issue 17): int4 serving >= 1.5x the eager fp32 model's rows/s; Ray with 2 actors within 15%
of the single process per core (rows/s / 2 >= 0.85 x single).

    nice -n 10 .venv/bin/python benchmarks/predict_throughput.py [--rows 1000000] [--raw-rows 50000]
        [--train-rows 20000] [--dim 16] [--skip-ray] [--batch 4096]

Also times the model's forward pass alone (rows encoded beforehand), where the serving form is all that
differs. Prints one line per mode and the ratios, with the load average; writes benchmarks/out/predict_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def build_run(root: Path, spark, train_rows: int, dim: int) -> dict:
    """A run over every categorical column of the generated CTR data, dense tables of `dim`."""
    from features.synthetic import generate
    from tests.pipelines.predict_run import build_tiny_run

    truth = generate("ctr", rows=100, seed=0, output=root / "probe")
    return build_tiny_run(root, spark, rows=train_rows, seed=3, features=truth["categorical"], dense=truth["dense"], dim=dim)


def parsed_rows(run: dict, spark, root: Path, raw_rows: int, rows: int) -> Path:
    """`rows` parsed rows (the ingest rules applied once to `raw_rows` new rows, then tiled) as 8 Parquet files."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from features.synthetic import generate
    from pipelines.ctr.predict import model_columns
    from pipelines.ctr.predict_input import parse_input

    truth = generate("ctr", rows=raw_rows, seed=99, output=root / "new")
    cols = model_columns(run["run"])
    got = parse_input(spark, root / "new" / truth["file"], run["dataset"], root / "parsed1", keep=cols)
    base = pads.dataset(str(got.parsed), format="parquet").to_table()
    reps = -(-rows // base.num_rows)
    table = pa.concat_tables([base] * reps).slice(0, rows)
    out = root / "parsed"
    out.mkdir()
    step = -(-rows // 8)
    for k in range(8):
        pq.write_table(table.slice(k * step, step), out / f"part-{k:05d}.parquet")
    return out


def score(run: Path, parsed: Path, out: Path, serving: str, ray_workers: int, batch: int) -> dict:
    from pipelines.ctr.predict import PredictConfig, score_ray, score_single
    from pipelines.ctr.predict_input import KEY

    shutil.rmtree(out, ignore_errors=True)
    cfg = PredictConfig(serving=serving, batch_size=batch, single_process=ray_workers == 0, workers=max(ray_workers, 1))
    t0 = time.perf_counter()
    backend = (score_single if ray_workers == 0 else score_ray)(run, parsed, out, cfg, list(KEY), "label")
    seconds = time.perf_counter() - t0
    import pyarrow.dataset as pads

    n = pads.dataset(str(out), format="parquet").count_rows()
    return {"serving": serving, "workers": ray_workers, "rows": n, "seconds": seconds, "rows_per_s": n / seconds,
            "backend": backend}


def model_only(run: Path, parsed: Path, serving: str, batch: int, rows: int) -> dict:
    """Rows/s of the model's forward pass alone on `rows` rows encoded beforehand (no read, encode or write)."""
    import pyarrow.dataset as pads
    import torch

    from pipelines.ctr.batches import batch_from_arrow, rebatch
    from pipelines.ctr.serving import Scorer

    scorer = Scorer(run, serving, label="label")
    table = pads.dataset(str(parsed), format="parquet").head(rows)
    batches = [batch_from_arrow(scorer.encoder.encode(t, scorer.features), scorer.spec) for t in rebatch([table], batch)]
    with torch.no_grad():
        scorer.model(batches[0].dense, batches[0].sparse)  # warm-up
        t0 = time.perf_counter()
        for b in batches:
            scorer.model(b.dense, b.sparse)
        seconds = time.perf_counter() - t0
    return {"serving": serving, "rows": table.num_rows, "seconds": seconds, "rows_per_s": table.num_rows / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--raw-rows", type=int, default=50_000)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()

    import torch

    from features.config import SparkConfig
    from features.spark import spark_session

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = Path(tempfile.mkdtemp(prefix="predict_tp_"))
    try:
        spark = spark_session(SparkConfig(master="local[2]", driver_memory="3g", shuffle_partitions=4,
                                          conf={"spark.ui.enabled": "false"}))
        t0 = time.perf_counter()
        run = build_run(root, spark, args.train_rows, args.dim)
        parsed = parsed_rows(run, spark, root, args.raw_rows, args.rows)
        spark.stop()
        print(f"setup (train a {args.train_rows:,}-row run, parse {args.raw_rows:,} rows, tile to {args.rows:,}): "
              f"{time.perf_counter() - t0:.0f}s; load average {os.getloadavg()}")
        forward = []
        for serving in ("eager", "as-trained", "int8", "int4"):
            r = model_only(run["run"], parsed, serving, args.batch, min(args.rows, 200_000))
            forward.append(r)
            print(f"model forward   {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s  ({r['rows']:,} rows encoded beforehand)  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        fwd = {r["serving"]: r["rows_per_s"] for r in forward}
        results = []
        for serving in ("eager", "as-trained", "int8", "int4"):
            r = score(run["run"], parsed, root / "out", serving, 0, args.batch)
            results.append(r)
            print(f"single process  {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s  ({r['seconds']:.1f}s; {r['backend']})  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        if not args.skip_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
            print(f"ray start-up: {time.perf_counter() - t0:.1f}s (outside the timings)")
            small = root / "parsed_small"  # one batch per actor: Ray Data's and the actors' fixed start-up cost
            small.mkdir()
            import pyarrow.dataset as pads
            import pyarrow.parquet as pq

            pq.write_table(pads.dataset(str(parsed), format="parquet").head(2 * args.batch), small / "part-00000.parquet")
            for serving in ("eager", "int4"):
                fixed = score(run["run"], small, root / "out", serving, 2, args.batch)
                r = score(run["run"], parsed, root / "out", serving, 2, args.batch)
                r["startup_seconds"] = fixed["seconds"]
                r["steady_rows_per_s"] = (r["rows"] - fixed["rows"]) / max(r["seconds"] - fixed["seconds"], 1e-9)
                results.append(r)
                print(f"ray, 2 actors   {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s  ({r['seconds']:.1f}s; start-up "
                      f"{fixed['seconds']:.1f}s, after it {r['steady_rows_per_s']:,.0f} rows/s)  load {os.getloadavg()[0]:.1f}",
                      flush=True)
            ray.shutdown()
        by = {(r["serving"], r["workers"]): r["rows_per_s"] for r in results}
        ratios = {f"{s}_vs_eager": by[(s, 0)] / by[("eager", 0)] for s in ("as-trained", "int8", "int4")}
        ratios.update({f"forward_{s}_vs_eager": fwd[s] / fwd["eager"] for s in ("as-trained", "int8", "int4")})
        if not args.skip_ray:
            steady = {r["serving"]: r["steady_rows_per_s"] for r in results if r["workers"] == 2}
            ratios.update({f"ray2_per_core_vs_single_{s}": by[(s, 2)] / 2 / by[(s, 0)] for s in ("eager", "int4")})
            ratios.update({f"ray2_steady_per_core_vs_single_{s}": steady[s] / 2 / by[(s, 0)] for s in ("eager", "int4")})
        print("ratios: " + "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        print(f"targets: int4_vs_eager >= 1.5 ({'met' if ratios['int4_vs_eager'] >= 1.5 else 'NOT met'})"
              + ("" if args.skip_ray else f"; ray2 per core >= 0.85 x single: with start-up "
                 f"{'met' if ratios['ray2_per_core_vs_single_int4'] >= 0.85 else 'NOT met'}, after it "
                 f"{'met' if ratios['ray2_steady_per_core_vs_single_int4'] >= 0.85 else 'NOT met'}")
              + f"; load average {os.getloadavg()}, {os.cpu_count()} cores")
        out = ROOT / "benchmarks" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "predict_throughput.json").write_text(json.dumps(
            {"args": vars(args), "results": results, "forward": forward, "ratios": ratios, "loadavg": os.getloadavg()}, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

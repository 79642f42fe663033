"""Predict throughput: rows/s and CPU-seconds of `sparserec predict`'s scoring in fp32 / int8 / int4 serving
(FBGEMM IntNBit inference tables) against the eager PyTorch model of the same checkpoint, in one process and
on Ray Data with 2 model actors.

A small run is trained first by the real stages (Spark ingest and vocab, a dense plan with every
categorical column, single-process training: tests/pipelines/predict_run.py), then its tables are sized up
to the generator's full cardinalities (`benchmarks/sized_run.py`: up to 1M ids a column, ~2.9M rows in
all, ~740 MB fp32 at dim 64, so lookups leave the CPU cache as a production CTR model's do; the new rows
are copies of trained rows, the vocabulary maps every value the generator can write). `--raw-rows` new
generated rows (seed 99) are parsed once by the run's ingest rules (`pipelines.ctr.predict_input`) and
tiled to `--rows` rows (default 1M) of parsed Parquet, so every mode scores the very same rows. The timed
part is the scoring phase of `predict` (read parsed rows, encode with the vocabularies, score, write
Parquet), one torch thread per process, model loading included.

Single process: `--repeats` rounds, each mode once a round (interleaved), ratios are medians of the per-round
ratios. Ray: `ray.init` timed apart, then Ray Data's actor-pool start-up (one batch per actor), then the whole
input; per-core ratios against the single process are given end to end (ray.init and the pool's start-up
included) and after start-up, by the wall clock (Ray rows/s / 2, which needs 2 idle cores) and per
CPU-second (rows per CPU-second of this process and every Ray process under it), which holds on a shared,
loaded machine where the wall clock does not. The Ray runs print their CPU-seconds by process kind. The
first Ray call builds the run's vocabulary index cache (`<run>/cache/vocab_index`, in the driver: counted in the
eager start-up run unless a previous run left it), which every model actor then memory-maps.

Targets (issue 17): int4 serving >= 1.5x the eager fp32 model's rows/s; Ray with 2 actors within 15%
of the single process per core.

    nice -n 10 .venv/bin/python benchmarks/predict_throughput.py [--rows 1000000] [--raw-rows 200000]
        [--train-rows 20000] [--dim 64] [--batch 4096] [--repeats 3] [--no-size-up] [--skip-ray]
        [--work DIR (keep and reuse the run and rows)]

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


class CpuMeter:
    """CPU seconds (user + system) spent by this process and every process below it (Ray's raylet, GCS,
    workers and actors) while the block runs: a sampler thread keeps each process's last reading, so a
    worker that exits early still counts (up to one sampling interval lost). On a shared machine this,
    not the wall clock, says what the work cost per core.

    Example:
        >>> with CpuMeter() as m:                                    # doctest: +SKIP
        ...     sum(range(10**7))
        >>> m.seconds > 0
        True
    """

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.interval, self.seconds = interval, 0.0
        self.by_kind: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._kind: dict[int, str] = {}

    @staticmethod
    def kind(p, me: int) -> str:
        """driver (this process), model actors, Ray Data task workers (read, repartition, write), Ray's daemons."""
        if p.pid == me:
            return "driver"
        name, cmd = p.name(), " ".join(p.cmdline()[:3])
        if "MapWorker" in name or "MapWorker" in cmd:
            return "model actors"
        if name.startswith("ray::") or "default_worker.py" in cmd:
            return "task workers"
        return "ray daemons"

    def _read(self) -> dict[int, float]:
        import psutil

        me = psutil.Process()
        got = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                got[p.pid] = t.user + t.system
                if self._kind.get(p.pid) != "model actors":  # a worker's title changes; an actor's stays
                    self._kind[p.pid] = self.kind(p, me.pid)
            except psutil.Error:
                pass
        return got

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._read())

    def __enter__(self) -> "CpuMeter":
        self._start = self._read()
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._read())
        for pid, v in self._last.items():
            k = self._kind.get(pid, "ray daemons")
            self.by_kind[k] = self.by_kind.get(k, 0.0) + v - self._start.get(pid, 0.0)
        self.seconds = sum(self.by_kind.values())


def score(run: Path, parsed: Path, out: Path, serving: str, ray_workers: int, batch: int) -> dict:
    """`predict`'s scoring phase (read parsed rows, encode, score, write Parquet) in one process or on Ray."""
    from pipelines.ctr.predict import PredictConfig, score_ray, score_single
    from pipelines.ctr.predict_input import KEY

    shutil.rmtree(out, ignore_errors=True)
    cfg = PredictConfig(serving=serving, batch_size=batch, single_process=ray_workers == 0, workers=max(ray_workers, 1))
    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        backend = (score_single if ray_workers == 0 else score_ray)(run, parsed, out, cfg, list(KEY), "label")
        seconds = time.perf_counter() - t0
    import pyarrow.dataset as pads

    n = pads.dataset(str(out), format="parquet").count_rows()
    return {"serving": serving, "workers": ray_workers, "rows": n, "seconds": seconds, "rows_per_s": n / seconds,
            "cpu_seconds": cpu.seconds, "rows_per_cpu_s": n / max(cpu.seconds, 1e-9),
            "cpu_by_kind": {k: round(v, 2) for k, v in sorted(cpu.by_kind.items())}, "backend": backend}


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
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            scorer.model(b.dense, b.sparse)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"serving": serving, "rows": table.num_rows, "seconds": seconds, "rows_per_s": table.num_rows / seconds,
            "cpu_seconds": cpu, "rows_per_cpu_s": table.num_rows / max(cpu, 1e-9)}


def setup(work: Path, args) -> tuple[dict, Path, Path, dict]:
    """The trained run, its sized-up copy (unless --no-size-up) and the parsed rows, built once under `work`
    (kept there with --work, so a rerun reuses them)."""
    import pickle

    from features.config import SparkConfig
    from features.spark import spark_session

    done = work / "setup.pkl"
    if done.exists():
        return pickle.loads(done.read_bytes())
    work.mkdir(parents=True, exist_ok=True)
    spark = spark_session(SparkConfig(master="local[2]", driver_memory="3g", shuffle_partitions=4,
                                      conf={"spark.ui.enabled": "false"}))
    t0 = time.perf_counter()
    run = build_run(work, spark, args.train_rows, args.dim)
    parsed = parsed_rows(run, spark, work, args.raw_rows, args.rows)
    spark.stop()
    model, sizes = run["run"], {}
    if not args.no_size_up:
        from sized_run import size_up

        model = work / "runs" / "sized"
        sizes = size_up(run["run"], model, seed=0)
    print(f"setup (train a {args.train_rows:,}-row run, parse {args.raw_rows:,} rows, tile to {args.rows:,}"
          f"{'' if args.no_size_up else ', size the tables up'}): {time.perf_counter() - t0:.0f}s", flush=True)
    got = (run, Path(model), parsed, sizes)
    done.write_bytes(pickle.dumps(got))
    return got


def table_sizes(run: Path) -> dict:
    """Rows and bytes of the run's tables in fp32 / int8 / int4 (FBGEMM row-wise: dim bytes, or dim/2, plus a
    4-byte fp16 scale and bias per row)."""
    from pipelines.ctr.serving import RunModel

    tables = RunModel.load(run / "train" / "model").plan.tables
    rows = sum(t.rows for t in tables)
    return {"tables": len(tables), "rows": rows, "largest_rows": max(t.rows for t in tables), "dim": tables[0].dim,
            "fp32_mb": sum(t.rows * t.dim * 4 for t in tables) / 2**20,
            "int8_mb": sum(t.rows * (t.dim + 4) for t in tables) / 2**20,
            "int4_mb": sum(t.rows * (t.dim // 2 + 4) for t in tables) / 2**20}


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


MODES = ("eager", "as-trained", "int8", "int4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--raw-rows", type=int, default=200_000)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3, help="single-process rounds, every mode once a round, interleaved")
    ap.add_argument("--forward-rows", type=int, default=200_000)
    ap.add_argument("--no-size-up", action="store_true", help="keep the trained run's small tables")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--modes", default=",".join(MODES), help="single-process serving modes (eager first: the baseline)")
    ap.add_argument("--work", type=Path, default=None, help="keep the run and parsed rows here and reuse them")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path[:0] = [str(ROOT / "benchmarks")]
    root = args.work or Path(tempfile.mkdtemp(prefix="predict_tp_"))
    try:
        _, run, parsed, _ = setup(root, args)
        sizes = table_sizes(run)
        print(f"tables: {sizes['tables']} tables, {sizes['rows']:,} rows (largest {sizes['largest_rows']:,}), dim "
              f"{sizes['dim']}: {sizes['fp32_mb']:,.0f} MB fp32, {sizes['int8_mb']:,.0f} MB int8, {sizes['int4_mb']:,.0f} "
              f"MB int4; load average {os.getloadavg()}", flush=True)
        modes = tuple(args.modes.split(","))
        forward, results = [], []
        for rep in range(args.repeats if not args.skip_single else 0):
            for serving in modes:
                r = model_only(run, parsed, serving, args.batch, min(args.rows, args.forward_rows))
                r["repeat"] = rep
                forward.append(r)
                print(f"[{rep}] model forward   {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s, {r['rows_per_cpu_s']:>10,.0f} "
                      f"rows per CPU-second  ({r['rows']:,} rows encoded beforehand)  load {os.getloadavg()[0]:.1f}", flush=True)
            for serving in modes:
                r = score(run, parsed, root / "out", serving, 0, args.batch)
                r["repeat"] = rep
                results.append(r)
                print(f"[{rep}] single process  {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s  ({r['seconds']:.1f}s; "
                      f"{r['rows_per_cpu_s']:,.0f} rows per CPU-second, {r['cpu_seconds']:.1f} CPU-s; {r['backend']})  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        ratios: dict[str, float] = {}
        single = {s: [r for r in results if r["serving"] == s] for s in modes}
        if results:
            for s in modes[1:]:
                ratios[f"{s}_vs_eager"] = median([a["rows_per_s"] / b["rows_per_s"] for a, b in zip(single[s], single["eager"])])
                ratios[f"per_cpu_s_{s}_vs_eager"] = median([a["rows_per_cpu_s"] / b["rows_per_cpu_s"]
                                                           for a, b in zip(single[s], single["eager"])])
                fs = [r for r in forward if r["serving"] == s]
                fe = [r for r in forward if r["serving"] == "eager"]
                ratios[f"forward_per_cpu_s_{s}_vs_eager"] = median([a["rows_per_cpu_s"] / b["rows_per_cpu_s"] for a, b in zip(fs, fe)])
        if not args.skip_ray:
            results += ray_runs(run, parsed, root, args, ratios, single)
        print("ratios (median over repeats): " + "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        targets = []
        if "int4_vs_eager" in ratios:
            targets.append(f"int4 >= 1.5 x eager: wall clock {'met' if ratios['int4_vs_eager'] >= 1.5 else 'NOT met'}, per "
                           f"CPU-second {'met' if ratios['per_cpu_s_int4_vs_eager'] >= 1.5 else 'NOT met'}")
        for k in [k for k in ratios if k.startswith("ray2_")]:
            targets.append(f"{k} {'met' if ratios[k] >= 0.85 else 'NOT met'}")
        print("targets: " + "; ".join(targets) + f"; load average {os.getloadavg()}, {os.cpu_count()} cores")
        out = ROOT / "benchmarks" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "predict_throughput.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "tables": sizes, "results": results, "forward": forward,
             "ratios": ratios, "loadavg": os.getloadavg()}, indent=2) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)


def ray_runs(run: Path, parsed: Path, root: Path, args, ratios: dict, single: dict) -> list[dict]:
    """Ray with 2 model actors: its start-up (ray.init, then the actor pool on one batch per actor) measured
    apart, then the whole input; ratios per core against the single process (median of its repeats), end to end
    (ray.init and the pool's start-up included) and after start-up."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    import ray

    from pipelines.ctr.predict import PredictConfig, ray_init

    for attempt in range(3):  # on a loaded machine the raylet can miss Ray's fixed 30 s start-up wait
        try:
            with CpuMeter() as init_cpu:
                t0 = time.perf_counter()
                ray_init(PredictConfig(workers=2))
                init_s = time.perf_counter() - t0
            break
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for it
            if "timed out during startup" not in str(err) or attempt == 2:
                raise
            print(f"ray.init failed ({err}); again", flush=True)
            ray.shutdown()
    print(f"ray.init: {init_s:.1f}s, {init_cpu.seconds:.1f} CPU-s {init_cpu.by_kind}", flush=True)
    small = root / "parsed_small"  # one batch per actor: Ray Data's and the actors' fixed start-up cost
    shutil.rmtree(small, ignore_errors=True)
    small.mkdir()
    pq.write_table(pads.dataset(str(parsed), format="parquet").head(2 * args.batch), small / "part-00000.parquet")
    out = []
    for serving in ("eager", "int4"):
        fixed = score(run, small, root / "out", serving, 2, args.batch)
        r = score(run, parsed, root / "out", serving, 2, args.batch)
        r.update(init_seconds=init_s, init_cpu_seconds=init_cpu.seconds, startup_seconds=fixed["seconds"],
                 startup_cpu_seconds=fixed["cpu_seconds"], startup_cpu_by_kind=fixed["cpu_by_kind"])
        r["steady_rows_per_s"] = (r["rows"] - fixed["rows"]) / max(r["seconds"] - fixed["seconds"], 1e-9)
        r["steady_rows_per_cpu_s"] = (r["rows"] - fixed["rows"]) / max(r["cpu_seconds"] - fixed["cpu_seconds"], 1e-9)
        r["e2e_rows_per_cpu_s"] = r["rows"] / (r["cpu_seconds"] + init_cpu.seconds)
        out.append(r)
        print(f"ray, 2 actors   {serving:>10}: {r['rows_per_s']:>10,.0f} rows/s ({r['seconds']:.1f}s, {r['cpu_seconds']:.1f} "
              f"CPU-s; pool start-up {fixed['seconds']:.1f}s, {fixed['cpu_seconds']:.1f} CPU-s; after it "
              f"{r['steady_rows_per_s']:,.0f} rows/s); rows per CPU-second: end to end with ray.init "
              f"{r['e2e_rows_per_cpu_s']:,.0f}, without {r['rows_per_cpu_s']:,.0f}, after start-up "
              f"{r['steady_rows_per_cpu_s']:,.0f}  load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"    CPU-seconds by process: {r['cpu_by_kind']}; start-up run: {fixed['cpu_by_kind']}", flush=True)
        if single.get(serving):
            one = median([x["rows_per_cpu_s"] for x in single[serving]])
            one_wall = median([x["rows_per_s"] for x in single[serving]])
            ratios[f"ray2_e2e_per_cpu_s_vs_single_{serving}"] = r["e2e_rows_per_cpu_s"] / one
            ratios[f"ray2_per_cpu_s_vs_single_{serving}"] = r["rows_per_cpu_s"] / one
            ratios[f"ray2_steady_per_cpu_s_vs_single_{serving}"] = r["steady_rows_per_cpu_s"] / one
            ratios[f"ray2_wall_per_core_vs_single_{serving}"] = r["rows_per_s"] / 2 / one_wall
            ratios[f"ray2_steady_wall_per_core_vs_single_{serving}"] = r["steady_rows_per_s"] / 2 / one_wall
    ray.shutdown()
    return out


if __name__ == "__main__":
    main()

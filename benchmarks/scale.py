"""Scaling of the CTR pipeline: every stage at 0.5M, 2M and 8M rows, its growth exponent, and two references.

Seeded Criteo-shaped logs (`sparserec generate ctr`, generated once and cached under
benchmarks/out/scale/data/<rows>/) go through every CTR stage, one `sparserec run --only STAGE
--force` process per stage (ingest vocab quality rank aggregates store plan train; Feast on), on the
run folder benchmarks/out/scale/runs/scale-<rows>/. For each stage and size it prints:

- seconds all-in (the process, its JVM / Ray start included) and net (the stage's own time from its
  manifest, which excludes the Spark start; for train also less one measured `ray.init()` start),
  rows/s on the net time;
- CPU seconds per million rows of the whole process tree (driver, JVM, Ray workers; the per-process
  CPU of /proc/<pid>/stat polled every 0.5 s, or the tree's rusage at exit when larger);
- peak RSS (VmHWM) of the driver, the JVM and each Ray worker; bytes written (the stage folder, and
  the write_bytes of /proc/<pid>/io, shuffle and spill included);
- the growth exponent k between consecutive sizes: net time ∝ rows^k.

References in the same run: a single-node pyarrow pass doing the same typed read of the TSV, the
Parquet write and the train-period vocabulary counts (value counts of every categorical column on
the rows before the vocab stage's validation cut), against ingest + vocab; and the `outrank`
package (its own virtualenv under benchmarks/out/outrank-venv, see benchmarks/outrank_speed.py) on
the 2M file (or the largest size given, below 2M), against the rank stage.

Writes benchmarks/out/scale/result.json, docs/scaling.md (tables) and docs/scaling.png (log-log
seconds vs rows per stage); prints the 1-minute load average at the start and at the end. A run
with sizes other than the default is labelled a smoke run in both.

    nice -n 10 .venv/bin/python benchmarks/scale.py --sizes 50000,200000        # smoke test (minutes)
    .venv/bin/python benchmarks/scale.py                                        # 0.5M, 2M, 8M (a quiet machine)
    .venv/bin/python benchmarks/scale.py --resume                               # after an interruption

Every finished stage is saved to benchmarks/out/scale/partial.json; `--resume` keeps those results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "scale"
DEFAULT_SIZES = [500_000, 2_000_000, 8_000_000]
STAGES = ["ingest", "vocab", "quality", "rank", "aggregates", "store", "plan", "train"]
SPARK_STAGES = {"ingest", "vocab", "quality", "rank", "aggregates", "store"}
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- measuring a process tree ------------------------------------------------------------------

def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "java" in cmd.split(" ", 1)[0] or "org.apache.spark" in cmd:
        return "jvm"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray_worker"
    if "raylet" in cmd or "gcs_server" in cmd or "/ray/" in cmd:
        return "ray_system"
    return "other"


class TreeMonitor:
    """Polls /proc for `root` and its descendants: CPU (utime+stime), peak RSS (VmHWM), write_bytes.

    Example:
        >>> m = TreeMonitor(os.getpid()); m.poll(); m.summary()["cpu_s"] >= 0   # doctest: +SKIP
        True
    """

    def __init__(self, root: int, every: float = 0.5) -> None:
        self.root, self.every = root, every
        self.procs: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "TreeMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.every)

    def poll(self) -> None:
        parents = _ppid_map()
        tree, frontier = {self.root}, [self.root]
        children: dict[int, list[int]] = {}
        for pid, pp in parents.items():
            children.setdefault(pp, []).append(pid)
        while frontier:
            for c in children.get(frontier.pop(), []):
                if c not in tree:
                    tree.add(c)
                    frontier.append(c)
        for pid in tree:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / TICK
                status = Path(f"/proc/{pid}/status").read_text()
                hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
                io = Path(f"/proc/{pid}/io").read_text() if os.access(f"/proc/{pid}/io", os.R_OK) else ""
                wb = next((int(line.split()[1]) for line in io.splitlines() if line.startswith("write_bytes:")), 0)
            except (OSError, IndexError, ValueError):
                continue
            rec = self.procs.setdefault(pid, {"kind": "other", "cpu": 0.0, "hwm": 0, "wb": 0})
            if rec["kind"] == "other":   # a launcher script may exec the JVM later: look again
                rec["kind"] = _kind(pid, self.root)
            rec["cpu"] = max(rec["cpu"], cpu)
            rec["hwm"] = max(rec["hwm"], hwm)
            rec["wb"] = max(rec["wb"], wb)

    def summary(self) -> dict[str, Any]:
        peak = lambda k: max((p["hwm"] for p in self.procs.values() if p["kind"] == k), default=0)  # noqa: E731
        return {"cpu_s": sum(p["cpu"] for p in self.procs.values()),
                "write_bytes": sum(p["wb"] for p in self.procs.values()),
                "rss_driver": peak("driver"), "rss_jvm": peak("jvm"),
                "rss_ray_workers": sorted((p["hwm"] for p in self.procs.values() if p["kind"] == "ray_worker"), reverse=True),
                "rss_max": max((p["hwm"] for p in self.procs.values()), default=0),
                "processes": len(self.procs)}


def measured(cmd: list[str], log: Path, cwd: Path = ROOT) -> dict[str, Any]:
    """Run `cmd` (output to `log`), watching its process tree; wall, CPU, peak RSS, bytes written."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        mon = TreeMonitor(proc.pid).start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        mon.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed (exit {proc.returncode}); see {log}")
    s = mon.summary()
    s["cpu_s"] = max(s["cpu_s"], usage.ru_utime + usage.ru_stime)   # reaped children are in the rusage
    if not s["rss_driver"]:   # exited before the first poll: the tree's peak is the best we have
        s["rss_driver"] = usage.ru_maxrss * 1024
    return {"wall": wall, **s}


# ---- data, configs, engine starts --------------------------------------------------------------

def dataset(rows: int, seed: int) -> tuple[Path, dict]:
    """The generated TSV of `rows` rows (made once, kept under benchmarks/out/scale/data/)."""
    folder = OUT / "data" / str(rows)
    truth = folder / "truth.json"
    if not truth.exists():
        print(f"generating {rows:,} rows (seed {seed}) into {folder}", flush=True)
        subprocess.run([sys.executable, "-m", "jobs.cli", "generate", "ctr", "--rows", str(rows), "--seed", str(seed),
                        "--output", str(folder)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    t = json.loads(truth.read_text())
    return folder / t["file"], t


def write_config(rows: int, data: Path, seed: int, epochs: int | None, driver_memory: str) -> tuple[Path, Path]:
    """configs/sample_ctr.yaml pointed at `data`, Feast on; returns (config path, run folder)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "sample_ctr.yaml").read_text())
    cfg["name"] = f"scale-{rows}"
    cfg["seed"] = seed
    cfg["output_dir"] = str(OUT / "runs")
    cfg["dataset"]["path"] = str(data)
    cfg["dataset"]["name"] = f"scale-{rows}"
    cfg["engine"]["spark"]["driver_memory"] = driver_memory
    cfg["store"] = {**cfg.get("store", {}), "enabled": True}
    if epochs is not None:
        cfg.setdefault("training", {})["epochs"] = epochs
    path = OUT / "configs" / f"scale-{rows}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, OUT / "runs" / cfg["name"]


def ray_start_seconds() -> float:
    """Seconds `ray.init()` takes here (2 CPUs, no dashboard), measured in a fresh process."""
    code = ("import time, ray; t=time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False); "
            "print(time.perf_counter()-t); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return float(out.stdout.strip().splitlines()[-1])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


# ---- the single-node pyarrow reference ---------------------------------------------------------

def pyarrow_reference(data: Path, truth: dict, cut: int, out: Path) -> dict[str, float]:
    """Typed read of the TSV, Parquet write, vocabulary counts of the rows before `cut` (pyarrow only)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    laps: dict[str, float] = {}
    t0 = time.perf_counter()
    types = {"label": pa.int32(), "ts": pa.int64(), **{c: pa.float64() for c in truth["dense"]},
             **{c: pa.string() for c in truth["categorical"]}}
    reader = pacsv.open_csv(data, parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=lambda _: "skip"),
                            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
                            read_options=pacsv.ReadOptions(block_size=16 << 20))
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(out / "data.parquet", reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    laps["read_write"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    ds = pads.dataset(out / "data.parquet")
    sizes = {}
    for c in truth["categorical"]:
        col = ds.to_table(columns=[c], filter=pc.field("ts") < cut).column(c)
        sizes[c] = len(pc.value_counts(col))
    laps["vocab_counts"] = time.perf_counter() - t1
    laps["rows"] = rows
    laps["distinct_values"] = int(sum(sizes.values()))
    return laps


# ---- the report ---------------------------------------------------------------------------------

def exponent(t1: float, t2: float, n1: int, n2: int) -> float | None:
    """k of t ∝ n^k between two sizes (None when a time is not positive).

    Example:
        >>> round(exponent(10.0, 40.0, 1_000, 4_000), 3)
        1.0
    """
    if t1 <= 0 or t2 <= 0:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def write_docs(res: dict[str, Any], doc: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = res["sizes"]
    smoke = sizes != DEFAULT_SIZES
    load = res["load_average"]
    head = (f"**SMOKE RUN** at {', '.join(f'{n:,}' for n in sizes)} rows on a shared, heavily loaded machine "
            f"(1-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end, on "
            f"{os.cpu_count()} cores): these figures only show that the benchmark runs; they say nothing "
            "about speed or the targets. Re-run without `--sizes` on a quiet machine for the real figures."
            if smoke else
            f"Sizes {', '.join(f'{n:,}' for n in sizes)} rows; 1-minute load average {load['start']:.1f} at the "
            f"start, {load['end']:.1f} at the end, on {os.cpu_count()} cores.")
    lines = ["# Scaling of the CTR pipeline", "", head, "",
             f"Command: `{res['command']}` (seed {res['seed']}, {res['when']}). Each stage is one "
             "`sparserec run --only STAGE --force` process; *all-in* includes the process, JVM and Ray start, "
             "*net* is the stage's own time (manifest; Spark start excluded; train less one measured "
             f"`ray.init()` of {res['ray_start_s']:.1f} s). CPU counts the driver, JVM and Ray workers. "
             "Generated by `benchmarks/scale.py`; see its docstring.", "",
             "## Per stage and size", "",
             "| stage | rows | all-in s | net s | rows/s (net) | CPU s / M rows | RSS driver MB | RSS JVM MB | RSS Ray workers MB | stage output MB | written MB (io) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for st in res["stages"]:
        for n in sizes:
            r = res["runs"].get(str(n), {}).get(st)
            if not r:
                continue
            workers = ", ".join(_mb(b) for b in r["rss_ray_workers"][:4]) or "-"
            jvm = _mb(r["rss_jvm"]) if r["rss_jvm"] or st not in SPARK_STAGES else "not seen"
            lines.append(f"| {st} | {n:,} | {r['wall']:.1f} | {r['net']:.1f} | {n / max(r['net'], 1e-9):,.0f} | "
                         f"{r['cpu_s'] / (n / 1e6):,.1f} | {_mb(r['rss_driver'])} | {jvm} | {workers} | "
                         f"{_mb(r['output_bytes'])} | {_mb(r['write_bytes'])} |")
    missing = [f"{st} at {n:,}" for n in sizes for st in res["stages"] if st not in res["runs"].get(str(n), {})]
    if missing:
        lines += ["", f"Not measured in this run (it was stopped first): {', '.join(missing)}."]
    lines += ["", "## Growth exponent k (net time ∝ rows^k)", "",
              "| stage | " + " | ".join(f"{a:,} → {b:,}" for a, b in zip(sizes, sizes[1:])) + " |",
              "|---|" + "---:|" * (len(sizes) - 1)]
    for st in res["stages"]:
        ks = [res["exponents"].get(st, {}).get(f"{a}-{b}") for a, b in zip(sizes, sizes[1:])]
        lines.append(f"| {st} | " + " | ".join("-" if k is None else f"{k:.2f}" for k in ks) + " |")
    ref = res.get("reference", {})
    if ref:
        lines += ["", "## Single-node pyarrow reference (typed read + Parquet write + train-period vocabulary counts)", "",
                  "| rows | pyarrow all-in s | pyarrow net s | ingest+vocab all-in s | ingest+vocab net s | ratio all-in | ratio net |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sizes:
            r = ref.get(str(n))
            if r:
                lines.append(f"| {n:,} | {r['wall']:.1f} | {r['net']:.1f} | {r['ours_wall']:.1f} | {r['ours_net']:.1f} | "
                             f"{r['ours_wall'] / r['wall']:.2f} | {r['ours_net'] / max(r['net'], 1e-9):.2f} |")
    o = res.get("outrank")
    if o:
        lines += ["", f"## `outrank` package on the {o['rows']:,}-row file (rank stage's ratio)", "",
                  f"outrank {o['version']} (`MI-numba-randomized`, 2 threads, 26 categorical columns, target ranking only): "
                  f"{o['wall']:.1f} s all-in; our rank stage (39 features, pairs of the top 10): {o['ours_wall']:.1f} s all-in, "
                  f"{o['ours_net']:.1f} s net; ratio ours / outrank {o['ours_wall'] / o['wall']:.2f} all-in."]
    elif res.get("outrank_note"):
        lines += ["", f"`outrank` reference: {res['outrank_note']}"]
    lines += ["", f"![seconds vs rows]({png.name})", ""]
    doc.write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(7, 5))
    for st in res["stages"]:
        pts = [(n, res["runs"][str(n)][st]["net"]) for n in sizes if st in res["runs"].get(str(n), {})]
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 1e-2) for p in pts], marker="o", label=st)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("net seconds")
    ax.set_title(("SMOKE RUN, load %.0f: " % load["start"] if smoke else "") + "CTR stages, seconds vs rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated row counts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: configs/sample_ctr.yaml's)")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--outrank-rows", type=int, default=2_000_000, help="the size outrank runs on (or the largest below)")
    ap.add_argument("--skip-outrank", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="keep the stage results of an interrupted run (benchmarks/out/scale/partial.json, same seed) "
                         "and run only the missing ones")
    ap.add_argument("--report-only", action="store_true",
                    help="write docs/scaling.md from the saved stage results (partial.json) without running anything")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "scaling.md")
    ap.add_argument("--reference-of", type=Path, help=argparse.SUPPRESS)   # internal: run the pyarrow reference
    ap.add_argument("--cut", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--reference-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_of:
        truth = json.loads((args.reference_of.parent / "truth.json").read_text())
        print(json.dumps(pyarrow_reference(args.reference_of, truth, args.cut, args.reference_out)))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    stages = [s for s in STAGES if s in args.stages.split(",")]
    load_start = os.getloadavg()[0]
    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} cores", flush=True)
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    partial = OUT / "partial.json"
    saved = json.loads(partial.read_text()) if (args.resume or args.report_only) and partial.exists() else {}
    ray_start = saved.get("ray_start_s") if args.report_only else None
    if ray_start is None:
        ray_start = ray_start_seconds() if "train" in stages else 0.0
    print(f"ray.init() start: {ray_start:.1f} s", flush=True)
    res: dict[str, Any] = {"sizes": sizes, "stages": stages, "seed": args.seed, "runs": {}, "exponents": {},
                           "reference": {}, "ray_start_s": ray_start, "command": " ".join(["benchmarks/scale.py", *sys.argv[1:]]),
                           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if saved:
        old = saved
        if old.get("seed") == args.seed and old.get("epochs") == args.epochs:
            res["runs"], res["reference"] = old["runs"], old["reference"]
            print(f"resuming: kept {sum(len(v) for v in res['runs'].values())} stage results from {partial}", flush=True)

    def save() -> None:
        partial.write_text(json.dumps({"seed": args.seed, "epochs": args.epochs, "ray_start_s": ray_start,
                                       "load_start": load_start, "runs": res["runs"],
                                       "reference": res["reference"]}, indent=1) + "\n")

    for n in [] if args.report_only else sizes:
        data, truth = dataset(n, args.seed)
        cfg, run_dir = write_config(n, data, args.seed, args.epochs, args.driver_memory)
        runs = res["runs"].setdefault(str(n), {})
        for st in stages:
            if st in runs:
                continue
            r = measured([sys.executable, "-m", "jobs.cli", "run", "--config", str(cfg), "--only", st, "--force"],
                         OUT / "logs" / f"{n}-{st}.log")
            manifest = json.loads((run_dir / st / "manifest.json").read_text())
            r["stage_seconds"] = float(manifest["seconds"])
            r["net"] = max(r["stage_seconds"] - (ray_start if st == "train" else 0.0), 0.0)
            r["output_bytes"] = folder_bytes(run_dir / st)
            runs[st] = r
            workers = ", ".join(_mb(b) for b in r["rss_ray_workers"][:4]) or "-"
            print(f"{n:>10,} {st:<10} all-in {r['wall']:7.1f} s  net {r['net']:7.1f} s  {n / max(r['net'], 1e-9):>10,.0f} rows/s  "
                  f"CPU {r['cpu_s'] / (n / 1e6):7.1f} s/M rows  RSS driver {_mb(r['rss_driver'])} MB, JVM {_mb(r['rss_jvm'])} MB, "
                  f"Ray workers [{workers}] MB  output {_mb(r['output_bytes'])} MB, written {_mb(r['write_bytes'])} MB  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            save()
        if not args.skip_reference and {"ingest", "vocab"} <= set(stages) and str(n) not in res["reference"]:
            cut = int(json.loads((run_dir / "vocab" / "schema.json").read_text())["cuts"]["validation_start"])
            r = measured([sys.executable, str(Path(__file__).resolve()), "--reference-of", str(data), "--cut", str(cut),
                          "--reference-out", str(OUT / "reference" / str(n))], OUT / "logs" / f"{n}-pyarrow.log")
            laps = json.loads((OUT / "logs" / f"{n}-pyarrow.log").read_text().strip().splitlines()[-1])
            r.update(laps, net=laps["read_write"] + laps["vocab_counts"],
                     ours_wall=runs["ingest"]["wall"] + runs["vocab"]["wall"],
                     ours_net=runs["ingest"]["net"] + runs["vocab"]["net"])
            res["reference"][str(n)] = r
            save()
            print(f"{n:>10,} pyarrow    all-in {r['wall']:7.1f} s  net {r['net']:7.1f} s  (read+write {laps['read_write']:.1f}, "
                  f"vocab counts {laps['vocab_counts']:.1f});  ingest+vocab / pyarrow: {r['ours_wall'] / r['wall']:.2f} all-in, "
                  f"{r['ours_net'] / max(r['net'], 1e-9):.2f} net", flush=True)
    got = lambda n, st: res["runs"].get(str(n), {}).get(st, {}).get("net", 0.0)  # noqa: E731 (0: not measured)
    for st in stages:
        res["exponents"][st] = {f"{a}-{b}": exponent(got(a, st), got(b, st), a, b) for a, b in zip(sizes, sizes[1:])}
        print(f"k {st:<10} " + "  ".join(f"{a:,}→{b:,}: " + ("-" if k is None else f"{k:.2f}")
                                          for (a, b), k in zip(zip(sizes, sizes[1:]), res["exponents"][st].values())))
    if not args.skip_outrank and not args.report_only and "rank" in stages:
        _outrank(res, sizes, args)
    res["load_average"] = {"start": saved.get("load_start", load_start) if args.report_only else load_start,
                           "end": os.getloadavg()[0]}
    (OUT / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    write_docs(res, args.docs, args.docs.with_suffix(".png"))
    print(f"wrote {OUT / 'result.json'}, {args.docs} and {args.docs.with_suffix('.png')}")
    print(f"load average at end: {os.getloadavg()} (start {load_start:.1f})")


def _outrank(res: dict[str, Any], sizes: list[int], args: argparse.Namespace) -> None:
    """The `outrank` package on the outrank-rows file (its own virtualenv), against our rank stage."""
    from benchmarks.outrank_speed import ensure_outrank

    n = max([s for s in sizes if s <= args.outrank_rows] or [min(sizes)])
    try:
        exe = ensure_outrank()
    except (subprocess.CalledProcessError, OSError) as err:
        res["outrank_note"] = f"not installable here ({err}); skipped"
        print(f"outrank: {res['outrank_note']}")
        return
    import pandas as pd

    data, truth = dataset(n, args.seed)
    folder = OUT / "outrank" / str(n)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    csv = folder / "data" / "data.csv"
    if not csv.exists():   # outrank's csv-raw layout: label + the categorical columns (not timed)
        pd.read_csv(data, sep="\t", dtype=str, keep_default_na=False, usecols=["label", *truth["categorical"]]) \
            .to_csv(csv, index=False)
    cmd = [str(exe), "--task", "ranking", "--data_path", str(folder / "data"), "--data_source", "csv-raw",
           "--heuristic", "MI-numba-randomized", "--target_ranking_only", "True", "--subsampling", "1",
           "--output_folder", str(folder / "result"), "--num_threads", "2",
           "--include_cardinality_in_feature_names", "False", "--disable_tqdm", "True"]
    r = measured(cmd, OUT / "logs" / f"{n}-outrank.log", cwd=folder)
    version = subprocess.run([str(exe.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('outrank'))"],
                             capture_output=True, text=True).stdout.strip()
    ours = res["runs"][str(n)]["rank"]
    res["outrank"] = {"rows": n, "version": version, "wall": r["wall"], "cpu_s": r["cpu_s"], "rss_max": r["rss_max"],
                      "ours_wall": ours["wall"], "ours_net": ours["net"]}
    print(f"outrank {version} on {n:,} rows: {r['wall']:.1f} s all-in; our rank {ours['wall']:.1f} s all-in, "
          f"{ours['net']:.1f} s net; ratio ours/outrank {ours['wall'] / r['wall']:.2f}", flush=True)


if __name__ == "__main__":
    main()

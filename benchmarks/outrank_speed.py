"""Speed and agreement: sparserec's rank stage (Spark local[2]) against the `outrank` package on the same CSV.

Generates the ctr data (features.synthetic, label + the 26 categorical columns), ranks it with
`outrank --heuristic MI-numba-randomized` (its own virtualenv under benchmarks/out/outrank-venv,
made on first use) and with `sparserec features rank`, both end to end as a user runs them (process
start, JIT / JVM start included) on the same 2 cores, and prints both wall times, the ratio, the
Spearman correlation of the two rankings, their top-5 overlap and where the planted features land.

    .venv/bin/python benchmarks/outrank_speed.py --rows 100000          # development size
    .venv/bin/python benchmarks/outrank_speed.py --rows 1000000         # the reported figure

Outputs go to benchmarks/out/outrank_speed/<rows>/ (result.json, both rankings). The sparserec
figure is given all-in and without the Spark (JVM) start, which the CLI times and prints; with
`--repeat N` sparserec runs N times and the median counts (outrank runs once). The CLI keeps a JVM
class archive (features/class_archive.py): the first run on a machine makes it (a cold start),
later runs load it; `--no-class-archive` measures cold starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
VENV = OUT / "outrank-venv"


def ensure_outrank() -> Path:
    """The outrank CLI in its own virtualenv (outrank pins old numpy/numba; kept apart from ours)."""
    exe = VENV / "bin" / "outrank"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "outrank", "xxhash==3.4.1"], check=True)
    return exe


def make_csv(rows: int, seed: int, folder: Path) -> tuple[Path, dict]:
    """label + C1..C26 of the generated ctr data as `folder/data.csv` (outrank's csv-raw layout)."""
    from features.synthetic import generate

    path = folder / "data.csv"
    truth_path = folder / "truth.json"
    if path.exists() and truth_path.exists():
        return path, json.loads(truth_path.read_text())
    raw = folder / "raw"
    truth = generate("ctr", rows=rows, seed=seed, output=raw)
    df = pd.read_csv(raw / truth["file"], sep="\t", dtype=str, keep_default_na=False,
                     usecols=["label", *truth["categorical"]])
    df[["label", *truth["categorical"]]].to_csv(path, index=False)
    (raw / truth["file"]).unlink()
    truth_path.write_text(json.dumps(truth))
    return path, truth


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")
    return wall


def laps(log: Path) -> dict[str, float]:
    """The `seconds: name value, ...` line that `sparserec features rank` prints."""
    for line in log.read_text().splitlines():
        if line.startswith("seconds: "):
            return {k: float(v) for k, v in (part.rsplit(" ", 1) for part in line[len("seconds: "):].split(", "))}
    raise SystemExit(f"{log}: no 'seconds:' line")


def outrank_scores(folder: Path) -> pd.Series:
    ranks = pd.read_csv(folder / "pairwise_ranks.tsv", sep="\t")
    ranks = ranks[(ranks["FeatureB"] == "label") & (ranks["FeatureA"] != "label")]
    return ranks.set_index("FeatureA")["Score"].astype(float)


def planted_ok(order: list[str], truth: dict) -> bool:
    """Every informative categorical feature above every noise one."""
    pos = {f: i for i, f in enumerate(order)}
    return max(pos[f] for f in truth["informative"]) < min(pos[f] for f in truth["noise"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-outrank", action="store_true", help="reuse the outrank result of an earlier run")
    ap.add_argument("--repeat", type=int, default=1, help="sparserec runs (the median counts)")
    ap.add_argument("--no-class-archive", action="store_true",
                    help="start Spark without the JVM class archive (the CLI keeps one by default; see features/class_archive.py)")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    folder = OUT / "outrank_speed" / str(args.rows)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    csv, truth = make_csv(args.rows, args.seed, folder / "data")
    print(f"data: {csv} ({args.rows:,} rows, 26 categorical columns, {csv.stat().st_size / 1e6:.0f} MB)", flush=True)

    cores = ["taskset", "-c", "0,1"] if os.cpu_count() and os.cpu_count() > 2 else []
    if not (args.skip_outrank and (folder / "outrank" / "pairwise_ranks.tsv").exists()):
        exe = ensure_outrank()
        cmd = [*cores, str(exe), "--task", "ranking", "--data_path", str(folder / "data"), "--data_source", "csv-raw",
               "--heuristic", "MI-numba-randomized", "--target_ranking_only", "True", "--subsampling", "1",
               "--output_folder", str(folder / "outrank"), "--num_threads", "2",
               "--include_cardinality_in_feature_names", "False", "--disable_tqdm", "True"]
        t_outrank = timed(cmd, folder, folder / "outrank.log")
        (folder / "outrank_seconds.txt").write_text(f"{t_outrank}\n")
    else:
        t_outrank = float((folder / "outrank_seconds.txt").read_text())
    print(f"outrank (MI-numba-randomized, 2 threads): {t_outrank:.1f} s", flush=True)

    cmd = [*cores, sys.executable, "-m", "jobs.cli", "features", "rank", "--input", str(csv), "--label", "label",
           "--output", str(folder / "sparserec"), "--pairs-top-k", "0", "--master", "local[2]",
           "--no-class-archive" if args.no_class_archive else "--class-archive"]
    runs = []
    for i in range(args.repeat):
        wall = timed(cmd, ROOT, folder / "sparserec.log")
        lap = laps(folder / "sparserec.log")
        runs.append((wall, lap["spark_start"], lap))
        print(f"sparserec rank (mi-permutation, Spark local[2]) run {i + 1}: {wall:.1f} s all-in, "
              f"Spark/JVM start {lap['spark_start']:.1f} s, without it {wall - lap['spark_start']:.1f} s; "
              f"passes: {', '.join(f'{k} {v:.1f}' for k, v in lap.items() if k != 'spark_start')}", flush=True)
    t_ours, t_start, ours_laps = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    ours = pd.read_csv(folder / "sparserec" / "ranking.tsv", sep="\t").set_index("feature")

    theirs = outrank_scores(folder / "outrank")
    feats = sorted(set(ours.index) & set(theirs.index))
    rho = float(spearmanr(ours.loc[feats, "score"], theirs.loc[feats]).statistic)
    our_order = list(ours.index)
    their_order = list(theirs.sort_values(ascending=False).index)
    top5 = len(set(our_order[:5]) & set(their_order[:5]))
    result = {
        "rows": args.rows, "outrank_seconds": round(t_outrank, 2), "outrank_reused": bool(args.skip_outrank),
        "sparserec_seconds": round(t_ours, 2), "sparserec_spark_start_seconds": round(t_start, 2),
        "sparserec_seconds_without_start": round(t_ours - t_start, 2), "sparserec_passes": ours_laps,
        "sparserec_runs": [round(r[0], 2) for r in runs], "class_archive": not args.no_class_archive,
        "speedup": round(t_outrank / t_ours, 2), "speedup_without_start": round(t_outrank / (t_ours - t_start), 2),
        "spearman": round(rho, 4), "top5_overlap": top5,
        "sparserec_top": our_order[:8], "outrank_top": their_order[:8],
        "planted_on_top": {"sparserec": planted_ok(our_order, truth), "outrank": planted_ok(their_order, truth)},
        "noise_band": {"sparserec": float(ours.loc[truth["noise"], "score"].abs().max()),
                       "outrank": float(theirs.loc[truth["noise"]].abs().max())},
        "load_average": os.getloadavg()[0], "load_average_at_start": load_start,
    }
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"sparserec (median of {len(runs)}): {t_ours:.1f} s all-in, {t_ours - t_start:.1f} s without the "
          f"{t_start:.1f} s Spark start" + ("   [outrank figure reused from an earlier run]" if args.skip_outrank else ""))
    print(f"speedup: {result['speedup']}x all-in, {result['speedup_without_start']}x without Spark start   "
          f"spearman: {rho:.3f}   top-5 overlap: {top5}/5")
    print(f"planted informative above all noise: sparserec {result['planted_on_top']['sparserec']}, "
          f"outrank {result['planted_on_top']['outrank']}")
    print(f"largest |noise score|: sparserec {result['noise_band']['sparserec']:.5f}, outrank {result['noise_band']['outrank']:.5f}")
    print(f"top 8: sparserec {our_order[:8]}\n       outrank   {their_order[:8]}")
    print(f"(1-minute load average: {load_start:.1f} at the start, {result['load_average']:.1f} at the end, on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()

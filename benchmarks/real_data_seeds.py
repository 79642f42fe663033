"""Seed grid on a real-data run: dense DLRM, DCN-v2 and the 10x plan, beside one-hot logistic
regression and HistGradientBoosting on exactly the same encoded rows (issue #13's quality targets).

Reads a finished `sparserec run` folder (its `vocab/` encoded splits and `rank/` feature spec, so
the split is fixed and every model sees the same rows), retrains each variant once per seed (the
run seed: initialisation and training order), plans the 10x variant from the same feature spec
(`embeddings.compression_ratio: 10`), and prints one table: test AUC mean +- std over the seeds,
test log loss beside the base-rate log loss, and the gaps the targets name (model - LR, 10x - dense).

    .venv/bin/python benchmarks/real_data_seeds.py --config configs/movielens.yaml --run runs/movielens \\
        --seeds 0,1,2 [--variants dlrm,dcn,10x] [--set training.epochs=3] [--baselines] [--jobs 3]

Each trained variant goes to `--work/<variant>-s<seed>/` (default /tmp/real-data-seeds/<run name>);
the results to `--out` (default `<run>/seeds/seeds.json`). `--jobs N` runs N trainings at once (each in
its own process; the figures are the same, only the wall clock differs). `--set KEY=VALUE` (YAML value) overrides a
config field for every variant, e.g. `--set embeddings.learning_rate=0.01`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# variant -> config overrides (the 10x plan is made from the run's feature spec, see `plan_for`)
VARIANTS: dict[str, dict[str, object]] = {
    "dlrm": {"training.model.name": "dlrm"},
    "dcn": {"training.model.name": "dcn"},
    "10x": {"training.model.name": "dlrm", "embeddings.compression_ratio": 10.0},
}


def parse_sets(items: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs, values read as YAML.

    Example:
        >>> parse_sets(["training.epochs=3", "training.model.name=dcn"])
        {'training.epochs': 3, 'training.model.name': 'dcn'}
    """
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item}: expected KEY=VALUE, e.g. training.epochs=3")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply(cfg, overrides: dict[str, object]) -> None:
    """Set dotted fields of a loaded run config (validated on assignment)."""
    for key, value in overrides.items():
        *path, last = key.split(".")
        obj = cfg
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, value)


def train_one(config: Path, run: Path, overrides: dict[str, object], seed: int, out: Path) -> dict:
    """Train one variant at one seed on the run's encoded rows; its test/validation figures."""
    from embeddings.planner import plan_embeddings
    from jobs.config import load_config
    from jobs.runs import run_stage
    from pipelines.ctr.trainer import train_stage

    cfg = load_config(config, check_paths=False)
    apply(cfg, overrides)
    cfg.seed = seed
    cfg.training.ray.single_process = True
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_embeddings(run / "rank", cfg.embeddings)
    plan_path = out / "embedding_plan.json"
    plan.save(plan_path)
    t = time.perf_counter()
    run_stage(out, "train", lambda inputs, o: train_stage(inputs, o, cfg=cfg.training, emb_cfg=cfg.embeddings, seed=seed),
              {"vocab": run / "vocab", "plan": plan_path},
              {"sections": cfg.section_hash("training", "embeddings"), "seed": seed}, seed=seed, force=True)
    m = json.loads((out / "train" / "metrics.json").read_text())
    splits = m["evaluation"]["splits"]
    served = served_test(out / "train" / "model", run / "vocab", cfg.training.batch_size)
    return {"seed": seed, "test_auc": splits["test"]["auc"], "test_log_loss": splits["test"]["log_loss"],
            "served_test_auc": served["auc"], "served_test_log_loss": served["log_loss"],
            "validation_auc": splits["validation"]["auc"], "validation_log_loss": splits["validation"]["log_loss"],
            "best_epoch": m["training"].get("best_epoch"), "plan_bytes": plan.total_bytes,
            "seconds": round(time.perf_counter() - t, 1)}


def served_test(model_dir: Path, vocab: Path, batch_size: int) -> dict:
    """Test AUC / log loss of the exported model as served (`embeddings.pt`: each table in its plan
    method's stored form, e.g. int4 rows), where the training-time evaluation scores the fp32 tables."""
    import torch

    from pipelines.ctr.batches import EncodedSchema, batch_spec, split_path
    from pipelines.ctr.evaluate import predict
    from pipelines.ctr.metrics import summary
    from pipelines.ctr.serving import RunModel

    rm = RunModel.load(model_dir)
    path = split_path(vocab / "encoded", "test")
    spec = batch_spec(EncodedSchema.load(vocab / "schema.json"), rm.plan, source=str(path))
    y, p = predict(rm.served("exported"), path, spec, batch_size, torch.device("cpu"))
    return summary(y, p)


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def render(result: dict) -> str:
    """The seed table as markdown."""
    lines = [f"run {result['run']}  config {result['config']}  overrides {result['overrides']}",
             f"base-rate log loss {result['base_rate_log_loss']:.4f}", "",
             "| model | seeds | test AUC mean ± std | served test AUC mean | test log loss mean | val AUC mean | best epochs |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in result["models"].items():
        a, sa = mean_std([r["test_auc"] for r in runs])
        ll, _ = mean_std([r["test_log_loss"] for r in runs])
        va, _ = mean_std([r["validation_auc"] for r in runs])
        sv = mean_std([r["served_test_auc"] for r in runs])[0] if all("served_test_auc" in r for r in runs) else float("nan")
        epochs = ",".join(str(r.get("best_epoch", "")) for r in runs)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | {a:.4f} ± {sa:.4f} | {sv:.4f} | {ll:.4f} | "
                     f"{va:.4f} | {epochs} |")
    gaps = result.get("gaps", {})
    if gaps:
        lines += [""] + [f"- {k}: {v:+.4f}" for k, v in gaps.items()]
    return "\n".join(lines)


def gaps(models: dict[str, list[dict]]) -> dict[str, float]:
    """Mean test-AUC gaps the targets name: each model - LR, 10x - dense DLRM."""
    mean = {k: mean_std([r["test_auc"] for r in v])[0] for k, v in models.items()}
    out = {}
    for name in ("dlrm", "dcn", "10x"):
        if name in mean and "logistic" in mean:
            out[f"{name} - logistic"] = mean[name] - mean["logistic"]
        if name in mean and "hgb" in mean:
            out[f"{name} - hgb"] = mean[name] - mean["hgb"]
    if "10x" in mean and "dlrm" in mean:
        out["10x - dlrm"] = mean["10x"] - mean["dlrm"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="a finished run folder (vocab/ and rank/)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="dlrm,dcn,10x", help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config override for every variant")
    ap.add_argument("--baselines", action="store_true", help="also fit LR and HGB (at every seed)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings run at once (separate processes; default 1)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one training, JSON spec
    args = ap.parse_args()

    if args.one:  # a child process: one variant at one seed, result as the last stdout line
        spec = json.loads(args.one)
        print(json.dumps(train_one(args.config, args.run, spec["overrides"], spec["seed"], Path(spec["out"]))))
        return
    for need in (args.run / "vocab" / "schema.json", args.run / "rank"):
        if not need.exists():
            sys.exit(f"{need}: not found; pass a finished run folder (sparserec run --config {args.config} wrote it)")
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = parse_sets(args.set)
    work = args.work or Path("/tmp/real-data-seeds") / args.run.name
    names = args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            sys.exit(f"--variants: '{name}' is unknown; use any of {', '.join(VARIANTS)}")
    jobs = [(name, seed) for name in names for seed in seeds]

    def one(job: tuple[str, int]) -> dict:
        name, seed = job
        spec = {"overrides": {**sets, **VARIANTS[name]}, "seed": seed, "out": str(work / f"{name}-s{seed}")}
        proc = subprocess.run([sys.executable, __file__, "--config", str(args.config), "--run", str(args.run),
                               "--one", json.dumps(spec)], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name} seed {seed}: test AUC {r['test_auc']:.4f} (served {r['served_test_auc']:.4f}) log loss {r['test_log_loss']:.4f} "
              f"val AUC {r['validation_auc']:.4f} best epoch {r['best_epoch']} ({r['seconds']}s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:   # each training is its own process
        results = list(pool.map(one, jobs))
    models: dict[str, list[dict]] = {}
    for (name, _), r in zip(jobs, results):
        models.setdefault(name, []).append(r)
    from ctr_baselines import SPLITS, base_rate_log_loss, fit_hgb, fit_logistic, load_split, one_hot

    from pipelines.ctr.metrics import auc, log_loss

    encoded = args.run / "vocab" / "encoded"
    schema = json.loads((args.run / "vocab" / "schema.json").read_text())
    splits = {s: load_split(encoded, schema, s) for s in SPLITS}
    y = {s: d.y for s, d in splits.items()}
    if args.baselines:
        x = one_hot(splits, schema)
        for seed in seeds:
            for name, fit in (("logistic", lambda s: fit_logistic(x, y, s)), ("hgb", lambda s: fit_hgb(splits, s))):
                p = fit(seed)["test_p"]
                models.setdefault(name, []).append({"seed": seed, "test_auc": auc(y["test"], p), "test_log_loss": log_loss(y["test"], p),
                                                    "validation_auc": float("nan"), "validation_log_loss": float("nan")})
                print(f"{name} seed {seed}: test AUC {models[name][-1]['test_auc']:.4f}", flush=True)
    result = {"run": str(args.run), "config": str(args.config), "overrides": sets,
              "base_rate_log_loss": base_rate_log_loss(y["train"], y["test"]), "models": models, "gaps": gaps(models)}
    print(render(result))
    out = args.out or args.run / "seeds" / "seeds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

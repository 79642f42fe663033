"""Compare session models in one table: M2TRec (multi-task and single-task), SASRec, GRU4Rec, popularity.

Datasets: the generated `sessions` data (cold-start items released in the last period; time-ordered
split by session start, test target = the last item of each test session) and MovieLens-100K as
per-user, time-ordered sequences (genres and release year as metadata; the last 3 ratings per user
held out, each predicted from the ratings before it; 10% of the movies removed from training and so
cold). Every model is trained on the same split with the same loop (early stopping on validation
Recall@20) and ranked over the whole catalogue, cold items included.

Leave-one-out protocol (as RecBole and S3-Rec evaluate; `--datasets toys,ml100k-loo`): per user, the
last item is the test target and the one before it the validation target; training holds the rest.
Both datasets are prepared by the importer as a user runs it (`sparserec sessions prepare --protocol
leave-one-out`). `toys` is Amazon Toys and Games (S3-Rec release, `../shared/data/amazon-toys/`: brand
and category path as one multi-valued attribute) with 10% of the items held out of training (cold,
`--cold-share`, drawn with `--seed`); `ml100k-loo` is MovieLens-100K in time order (ties in file
order; genres and release year as an item table), no cold items. Every model is ranked over the whole
catalogue and reported overall / warm / cold (Recall@10/20, NDCG@10/20, one table per dataset, seed
stated). The left-to-right models train on windows with a loss at every position (`train_windows`),
up to 200 epochs with early stopping on validation NDCG@20 (patience 5, best epoch kept; a seeded
`--val-sample` of the validation targets after each epoch). Variants: popularity; GRU4Rec and SASRec in
RecBole's settings (GRU4Rec.yaml: embedding 64, GRU 128, dropout 0.3; SASRec.yaml: hidden 64, 2
layers, 2 heads, dropout 0.5; both full softmax cross-entropy over every item, Adam 1e-3, no gradient
clipping, max length 50); SASRec with the M2TRec rows' loss and optimiser (`sasrec (m2trec's settings)`:
sampled softmax, dropout 0.2, lr 2e-3); M2TRec metadata-only; the hybrid alone (`hybrid, cold_offset`: item-ID rows
of training items gated onto the metadata encoding, cold items by its own scores plus a `cold_offset`
set on validation); and `m2trec (hybrid)`, the two M2TRecs ranked together (`models/cold_ranks.py`:
cold items at exactly their metadata-only ranks, warm items in the hybrid's order), which the train
stage keeps for `item_ids: auto`.

    nice -n 10 .venv/bin/python benchmarks/session_models.py --datasets toys --seed 0
    nice -n 10 .venv/bin/python benchmarks/session_models.py --datasets ml100k-loo --models gru4rec --val-sample 0

Writes `benchmarks/out/session_models/<dataset>/report.md|metrics.json|recall.png` and
`benchmarks/out/session_models/README.md` (all tables), and prints the tables.

    .venv/bin/python benchmarks/session_models.py                      # both datasets
    .venv/bin/python benchmarks/session_models.py --datasets synthetic --rows 20000 --epochs 3

The multi-task ablation (`--ablation`): M2TRec with its category/subcategory heads against the
single-task variant (heads left out), over several seeds (model init, batch order, dropout,
negatives; the data split stays fixed), each trained to early stopping on validation Recall@20.
The auxiliary loss weight is chosen on VALIDATION only (a grid, first seed); the test split is
only read for the final figures. Prints and writes `<dataset>/ablation.md|json`: mean ± std of
R@20 / NDCG@20 overall, cold and sparse, and the paired per-seed differences.

    .venv/bin/python benchmarks/session_models.py --ablation --datasets synthetic --seeds 0,1,2 --aux-weights 0.1,0.3,1.0
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipelines.runtime.config import ModelConfig, TrainConfig  # noqa: E402
from pipelines.sessions.data import load_sessions  # noqa: E402
from pipelines.sessions.evaluate import comparison_table, evaluate_session_model, write_report  # noqa: E402
from pipelines.sessions.layout import movielens_layout, synthetic_layout  # noqa: E402
from pipelines.sessions.train import build_model, train_session_model  # noqa: E402

VARIANTS = {   # in order of interest: a run cut short still has the main rows
    "popularity": dict(name="popularity"),
    "m2trec (multi-task)": dict(name="m2trec", loss_weights=[1.0, 0.3, 0.3]),
    "m2trec (single-task)": dict(name="m2trec", loss_weights=[1.0, 0.0, 0.0]),
    "sasrec": dict(name="sasrec"),
    "gru4rec": dict(name="gru4rec"),
    "m2trec + 512 hashed ids (hybrid)": dict(name="m2trec", loss_weights=[1.0, 0.3, 0.3], hybrid_item_id_buckets=512),
}


RECBOLE = dict(lr=1e-3, grad_clip_norm=None)   # RecBole's trainer: Adam 1e-3, no gradient clipping
LOO_VARIANTS = {   # leave-one-out protocol: left-to-right models train on windows (train_windows)
    "popularity": dict(name="popularity"),
    # RecBole's GRU4Rec.yaml: embedding 64, hidden 128, 1 layer, dropout 0.3, CE over every item
    "gru4rec": dict(name="gru4rec", dropout=0.3, softmax="full", train_windows=True, _train=dict(RECBOLE)),
    # RecBole's SASRec.yaml: hidden 64, 2 layers, 2 heads, dropout 0.5 (attention and hidden), CE over every item
    "sasrec": dict(name="sasrec", dropout=0.5, softmax="full", train_windows=True, _train=dict(RECBOLE)),
    # SASRec with the M2TRec rows' loss and optimiser (sampled softmax, dropout 0.2, lr 2e-3, clipping 10). Before
    # models/sasrec.py followed RecBole's layout (#19: LayerNorm on item + position embedding, positions from the start,
    # post-norm gelu layers, normal(0, 0.02) init) full-softmax SASRec stayed at popularity level on Amazon Toys
    "sasrec (m2trec's settings)": dict(name="sasrec", train_windows=True),
    "m2trec (metadata only)": dict(name="m2trec", item_ids="off", causal=True, pooling="last", train_windows=True),
    # the hybrid alone: cold items ranked by its own scores + cold_offset (set on validation)
    "m2trec (hybrid, cold_offset)": dict(name="m2trec", item_ids="on", causal=True, pooling="last", train_windows=True),
    # the two above ranked together (models/cold_ranks.py): cold items at the metadata-only ranks; nothing trained
    "m2trec (hybrid)": dict(name="m2trec", _compose=True),
}
LOO_DATASETS = ("toys", "ml100k-loo")
TOYS = ROOT.parent / "shared" / "data" / "amazon-toys"


def sessions_prepare(sequences: Path, items: Path, out: Path, cold_share: float, seed: int, *extra: str) -> dict:
    """`sparserec sessions prepare` (the importer, as a user runs it) into `out`; its counts (import.json).

    Rows are written whole (no `--max-length`: it would also cut the train rows, half of MovieLens' ratings);
    each model reads the last `max_length` items of a row."""
    import subprocess

    cmd = [sys.executable, "-m", "jobs.cli", "sessions", "prepare", "--sequences", str(sequences), "--items", str(items),
           "--output", str(out), "--protocol", "leave-one-out", "--cold-share", str(cold_share), "--seed", str(seed),
           *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sessions prepare failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return json.loads((out / "import.json").read_text())


def toys_layout(out: Path, cold_share: float, seed: int, max_length: int) -> str:
    """Amazon Toys (S3-Rec release) through `sessions prepare`, leave-one-out; a note for the report."""
    c = sessions_prepare(TOYS / "Toys_and_Games.txt.gz", TOYS / "Toys_and_Games_item2attributes.json.gz", out,
                         cold_share, seed)
    return (f"Amazon Toys and Games (S3-Rec release) via `sparserec sessions prepare --protocol leave-one-out "
            f"--cold-share {cold_share} --seed {seed}`: {c['sequences_used']:,} users, "
            f"{c['items']:,} items, {c['cold_items']:,} cold (removed from training; {c['targets']['test']['cold']:,} "
            f"cold test targets); brand + category path as one multi-valued attribute")


def ml100k_loo_layout(out: Path, seed: int, max_length: int) -> str:
    """MovieLens-100K through `sessions prepare`: the ratings as an event log (RecBole's atomic .inter columns), genres
    and release year as an item table; time order (equal timestamps in file order, as RecBole), no cold items."""
    import pandas as pd

    ml = ROOT.parent / "shared" / "data" / "ml-100k"
    head = (ml / "u.data").read_text().split("\n", 1)[0]
    r = (pd.read_csv(ml / "u.data", sep="|") if "|" in head else
         pd.read_csv(ml / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"]))
    movies = pd.read_csv(ml / "u.item", sep="|", encoding="latin-1")
    genres = list(movies.columns[-19:])
    flags = movies[genres].to_numpy().astype(bool)
    year = pd.to_datetime(movies["releaseDate"], format="%d-%b-%Y", errors="coerce").dt.year
    src = out.parent / "ml100k-source"
    src.mkdir(parents=True, exist_ok=True)
    r.rename(columns={"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"})[
        ["user_id:token", "item_id:token", "timestamp:float"]].to_csv(src / "ml-100k.inter", sep="\t", index=False)
    pd.DataFrame({"item_id": movies["item"].astype(str), "year": year.astype("Int64").astype(str).replace("<NA>", ""),
                  "genres": ["|".join(g for g, f in zip(genres, row) if f) for row in flags]}
                 ).to_csv(src / "items.csv", index=False)
    c = sessions_prepare(src / "ml-100k.inter", src / "items.csv", out, 0.0, seed,
                         "--categorical", "year", "--multi-valued", "genres")
    return (f"MovieLens-100K via `sparserec sessions prepare` (ratings as a RecBole-style .inter event log, genres and "
            f"release year as an item table): {c['sequences_used']} users, {c['items']} items, {c['events_used']:,} "
            f"ratings in time order (ties in file order), leave-one-out (RecBole's LS valid_and_test, full ranking), no "
            f"cold items; models read the last {max_length} items before a target")


def prepare(dataset: str, work: Path, rows: int, seed: int, ml_history: int = 100, cold_share: float = 0.1,
            max_length: int = 50) -> tuple[Path, int, str]:
    """The sessions-stage folder of `dataset`, the number of evaluated positions per test session, a note."""
    out = work / dataset
    if dataset == "toys":
        return out, 1, toys_layout(out, cold_share, seed, max_length)
    if dataset == "ml100k-loo":
        return out, 1, ml100k_loo_layout(out, seed, max_length)
    if dataset in ("synthetic", "synthetic-spark"):
        from features.synthetic import generate

        raw = work / "raw"
        truth = generate("sessions", rows=rows, seed=seed, output=raw)
        note = f"generated sessions: {truth['rows']:,} events, {truth['n_items']:,} items, seed {seed}"
        if dataset == "synthetic":
            synthetic_layout(raw / truth["file"], raw / truth["items_file"], out)
            return out, 1, note + "; layout by the pandas adapter (pipelines/sessions/layout.py)"
        spark_layout(raw / truth["file"], raw / truth["items_file"], work, out)
        return out, 1, note + "; layout by the Spark stages ingest + sessions (features/sessions.py)"
    ml = ROOT.parent / "shared" / "data" / "ml-100k"
    movielens_layout(ml, out, holdout=3, cold_share=0.1, seed=seed, max_length=ml_history)
    return out, 3, (f"MovieLens-100K: last 3 ratings per user held out, 10% of movies cold (removed from training), "
                    f"last {ml_history} ratings per user kept")


def spark_layout(events: Path, items: Path, work: Path, out: Path) -> None:
    """ingest + sessions Spark stages (local[2]) over the generated CSV files."""
    from features.config import ColumnRoles, DatasetConfig, IngestConfig, ItemTableConfig, SessionsConfig, SparkConfig
    from features.ingest import ingest
    from features.sessions import build_sessions
    from features.spark import spark_session

    ds = DatasetConfig(name="bench", path=events, format="csv", kind="sessions",
                       roles=ColumnRoles(session_id="session_id", user_id="user_id", timestamp="timestamp", item_id="item_id"),
                       items=ItemTableConfig(path=items, format="csv", item_id="item_id", multi_valued=["tokens"],
                                             categorical=["category", "subcategory", "brand", "price_bucket"]))
    spark = spark_session(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=4,
                                      conf={"spark.ui.enabled": "false"}))
    try:
        ingest({"raw": events, "items": items}, work / "ingest", ds, IngestConfig(), spark)
        build_sessions({"ingest": work / "ingest"}, out, ds, SessionsConfig(), spark)
    finally:
        spark.stop()


class TimeBudgetSpent(Exception):
    """`--time-budget`: a variant's training stopped after the epoch that spent it (best epoch's weights kept)."""


TRAINED: dict[str, torch.nn.Module] = {}   # the metadata-only M2TRec of this dataset, to set the hybrid's cold_offset


def train_and_test(data, args: argparse.Namespace, overrides: dict, seed: int, positions: int) -> tuple[dict, dict, float]:
    """Build the model that `overrides` names, on the benchmark's settings, train it (early stopping on validation
    R@20 or the variant's metric, none for popularity) and evaluate it on the test split: (history, test metrics, seconds).
    A variant's `_train` entry overrides lr, batch_size, val_metric, patience."""
    overrides = dict(overrides)
    if overrides.pop("_compose", False):   # hybrid + metadata-only trained above, ranked together
        from models.cold_ranks import ColdRankHybrid

        model = ColdRankHybrid(TRAINED["hybrid"], TRAINED["metadata-only"])
        test = evaluate_session_model(model, data, "test", positions=positions, ks=[10, 20],
                                      max_length=TRAINED["hybrid"].config.max_length, seed=seed)
        return {"loss": [], "best_epoch": "-"}, test, 0.0
    t = {"lr": args.lr, "batch_size": args.batch_size, "val_metric": args.val_metric, "patience": args.patience,
         "grad_clip_norm": 10.0, "epochs": args.epochs, **overrides.pop("_train", {})}
    base = dict(hidden=args.hidden, layers=2, heads=2, dropout=0.2, max_length=args.max_length, softmax=args.softmax,
                negatives=args.negatives)
    if not {"category", "subcategory"} <= set(data.features.categorical):   # Amazon Toys, ml100k-loo: no task heads
        base.update(task_attributes=[], loss_weights=[1.0])
    mc = ModelConfig(**{**base, **overrides})
    tc = TrainConfig(model=mc, epochs=t["epochs"], batch_size=t["batch_size"], dense_learning_rate=t["lr"],
                     early_stopping_patience=t["patience"], grad_clip_norm=t["grad_clip_norm"], device=args.device)
    torch.manual_seed(seed)
    model = build_model(mc, data)
    k = int(t["val_metric"].split("@")[1])
    best: dict = {}
    def val(m: torch.nn.Module) -> float:
        score = evaluate_session_model(m, data, "validation", positions=1, ks=[k], max_length=mc.max_length,
                                       sample=args.val_sample or None)["overall"][t["val_metric"]]
        scores.append(score)
        print(f"    epoch {len(scores)}: validation {t['val_metric']} {score:.4f} ({time.perf_counter() - t0:.0f}s)",
              flush=True)
        if args.time_budget:   # keep the best epoch's weights; stop once the budget is spent (after this epoch)
            if score > best.get("score", -1.0):
                best.update(score=score, epoch=len(scores) - 1, state=copy.deepcopy(m.state_dict()))
            if time.perf_counter() - t0 > args.time_budget:
                raise TimeBudgetSpent
        return score

    scores: list[float] = []
    t0 = time.perf_counter()
    try:
        history = train_session_model(model, data, tc, seed=seed, validate=None if mc.name == "popularity" else val)
    except TimeBudgetSpent:
        model.load_state_dict(best["state"])
        history = {"loss": scores, "validation": scores, "best_epoch": best["epoch"], "stopped": "time budget"}
        print(f"    time budget {args.time_budget:.0f}s spent after epoch {len(scores)}; best epoch {best['epoch'] + 1}",
              flush=True)
    if mc.name == "m2trec" and mc.item_ids == "off":
        TRAINED["metadata-only"] = model
    if mc.name == "m2trec" and mc.item_ids == "on":
        TRAINED["hybrid"] = model
    if mc.name == "m2trec" and mc.item_ids == "on" and "metadata-only" in TRAINED:
        from pipelines.sessions.select import tune_cold_offset

        history["cold_offset"], _ = tune_cold_offset(model, TRAINED["metadata-only"], data, mc.max_length, 20)
    test = evaluate_session_model(model, data, "test", positions=positions, ks=[10, 20], max_length=mc.max_length, seed=seed)
    test["cold_offset"] = history.get("cold_offset")
    test["epochs"] = len(history["loss"])
    test["best_epoch"] = history.get("best_epoch")
    test["stopped"] = history.get("stopped", "early stopping or epochs")
    return history, test, time.perf_counter() - t0


def slice_table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, Recall@10/20 and NDCG@10/20 overall / warm / cold, target counts."""
    figures = [(sl, m) for sl in ("overall", "warm", "cold") for m in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")]
    head = (["model"] + [f"{m.replace('recall', 'R').replace('ndcg', 'NDCG')} {sl}" for sl, m in figures]
            + ["epochs (best)", "n all/warm/cold"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name] + [f"{r[sl][m]:.4f}" if r[sl]["n"] else "–" for sl, m in figures]
        cells.append(f"{r['epochs']} ({r['best_epoch'] + 1})" if r.get("epochs") and r.get("best_epoch") is not None
                     else "–")
        cells.append("/".join(str(r[sl]["n"]) for sl in ("overall", "warm", "cold")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def resolve_defaults(args: argparse.Namespace, dataset: str) -> None:
    """Settings not given on the command line: the leave-one-out datasets' or the others' defaults."""
    # leave-one-out: ml100k-loo windows hold ~32 targets, 50 a batch (~1.6k targets, RecBole's batch is 2048 prefixes),
    # and its 943 validation users are noisy (patience 10, RecBole's stopping_step); toys windows hold ~5 targets
    defaults = (dict(max_length=50, epochs=200, batch_size=50 if dataset == "ml100k-loo" else 128, negatives=1024,
                     patience=10 if dataset == "ml100k-loo" else 5, val_metric="ndcg@20")
                if dataset in LOO_DATASETS else dict(max_length=20, epochs=6, batch_size=256, negatives=256, patience=1, val_metric="recall@20"))
    for k, v in defaults.items():
        setattr(args, k, args.given[k] if args.given[k] is not None else v)


def run_dataset(dataset: str, args: argparse.Namespace, work: Path) -> tuple[dict, str]:
    loo = dataset in LOO_DATASETS
    resolve_defaults(args, dataset)
    TRAINED.clear()
    # the layout keeps the last 50 items of every row (at least max_length); the models read their last max_length
    folder, positions, note = prepare(dataset, work, args.rows, args.seed, args.ml_history, args.cold_share,
                                      max(50, args.max_length))
    data = load_sessions(folder)
    variants = LOO_VARIANTS if loo else VARIANTS
    print(f"\n## {dataset}: {note}; data issues {data.issues}", flush=True)
    results, timings = {}, {}
    saved = args.out / dataset / "metrics.json"
    if args.resume and saved.exists():   # keep the models already measured in an earlier, interrupted run
        results = json.loads(saved.read_text())
        timings = results.pop("_seconds", {})
    for label, overrides in variants.items():
        if args.models and not any(label == m or (m not in variants and label.startswith(m))
                                   for m in args.models.split(",")):   # a full label, else a prefix
            continue
        if label in results:
            continue
        history, results[label], timings[label] = train_and_test(data, args, overrides, args.seed, positions)
        r = results[label]
        print(f"  {label:22s} R@20 {r['overall']['recall@20']:.4f} cold {r['cold']['recall@20']:.4f} "
              f"epochs {len(history['loss'])} (best {history.get('best_epoch', '-')}) {timings[label]:.0f}s", flush=True)
        (args.out / dataset).mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({**results, "_seconds": timings}, indent=1))
    results = {k: results[k] for k in variants if k in results}
    unit = "windows" if loo else "examples"
    notes = [note, f"data issues: {data.issues}",
             f"settings: hidden {args.hidden}, max_length {args.max_length}, epochs <= {args.epochs} (early stopping on "
             f"validation {args.val_metric}, patience {args.patience}, best epoch kept), batch {args.batch_size} {unit}, "
             f"lr {args.lr}, softmax {args.softmax} ({args.negatives} uniform negatives + in-batch, logQ), "
             f"seed {args.seed} (model init, batch order, dropout, negatives; also the cold-item draw), "
             f"threads {torch.get_num_threads()}; per-variant overrides: "
             + "; ".join(f"{k}: {v}" for k, v in variants.items() if k in results and len(v) > 1),
             "train+eval seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
             + (f"; time budget {args.time_budget:.0f}s per trained variant (training stops after the epoch that "
                f"spends it, best validation epoch kept): " + ", ".join(f"{k} {r.get('stopped')}" for k, r in
                                                                       results.items()) if args.time_budget else ""),
             "ID models (SASRec, GRU4Rec) give items never seen in training no embedding: score -inf, ranked after every "
             "scorable item, ties broken by a seeded random order; popularity gives them count 0 (same tie rule)."]
    write_report(results, args.out / dataset, title=f"Session models on {dataset}", notes=notes)
    if loo:   # the by-slice table first
        report = args.out / dataset / "report.md"
        title, rest = report.read_text().split("\n\n", 1)
        report.write_text(f"{title}\n\n## Recall / NDCG at 10 and 20, overall / warm / cold (seed {args.seed})\n\n"
                          f"{slice_table(results)}\n## All figures\n\n{rest}")
    saved.write_text(json.dumps({**results, "_seconds": timings}, indent=1))
    return results, (args.out / dataset / "report.md").read_text()


def _train_m2trec(data, args: argparse.Namespace, weights: list[float], seed: int, positions: int) -> dict:
    """Train one M2TRec to early stopping on validation R@20; its best validation score and test metrics."""
    history, test, seconds = train_and_test(data, args, {"name": "m2trec", "loss_weights": weights}, seed, positions)
    return {"weights": weights, "seed": seed, "val_recall@20": max(history["validation"]), "epochs": len(history["loss"]),
            "best_epoch": history.get("best_epoch"), "seconds": round(seconds, 1), "test": test}


ABLATION_FIGURES = [(sl, m) for sl in ("overall", "cold", "sparse") for m in ("recall@20", "ndcg@20")]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def ablation_table(runs: dict[str, list[dict]]) -> str:
    """Markdown: mean ± std per variant, then the paired differences (multi - single) per seed."""
    import numpy as np

    head = ["variant", "seeds", "val R@20"] + [f"{m.split('@')[0].replace('recall', 'R').replace('ndcg', 'NDCG')}@20 {sl}"
                                                for sl, m in ABLATION_FIGURES] + ["epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rs in runs.items():
        cells = [name, str(len(rs)), "%.4f ± %.4f" % _mean_std([r["val_recall@20"] for r in rs])]
        cells += ["%.4f ± %.4f" % _mean_std([r["test"][sl][m] for r in rs]) for sl, m in ABLATION_FIGURES]
        cells.append(" ".join(str(r["epochs"]) for r in rs))
        lines.append("| " + " | ".join(cells) + " |")
    multi, single = runs["multi-task"], runs["single-task"]
    by_seed = {r["seed"]: r for r in single}
    pairs = [(m, by_seed[m["seed"]]) for m in multi if m["seed"] in by_seed]
    lines += ["", "Paired by seed (multi-task − single-task):", "",
              "| seed | " + " | ".join(f"Δ {m}@{sl}".replace("@20@", "@20 ") for sl, m in ABLATION_FIGURES) + " |",
              "|" + "---|" * (len(ABLATION_FIGURES) + 1)]
    diffs = {f: [] for f in ABLATION_FIGURES}
    for m, s in pairs:
        row = []
        for sl, k in ABLATION_FIGURES:
            d = m["test"][sl][k] - s["test"][sl][k]
            diffs[(sl, k)].append(d)
            row.append(f"{d:+.4f}")
        lines.append(f"| {m['seed']} | " + " | ".join(row) + " |")
    summary = []
    for f in ABLATION_FIGURES:
        mean, sd = _mean_std(diffs[f])
        t = mean / (sd / np.sqrt(len(diffs[f]))) if sd > 0 and len(diffs[f]) > 1 else float("nan")
        wins = sum(d > 0 for d in diffs[f])
        summary.append(f"{mean:+.4f} ± {sd:.4f} (t={t:.2f}, {wins}/{len(diffs[f])} up)")
    lines.append("| mean ± std | " + " | ".join(summary) + " |")
    return "\n".join(lines) + "\n"


def run_ablation(dataset: str, args: argparse.Namespace, work: Path) -> str:
    """Multi-task vs single-task M2TRec over seeds; aux weight tuned on validation (first seed)."""
    resolve_defaults(args, dataset)
    folder, positions, note = prepare(dataset, work, args.rows, args.seed, args.ml_history)
    data = load_sessions(folder)
    seeds = [int(x) for x in args.seeds.split(",")]
    print(f"\n## ablation on {dataset}: {note}", flush=True)
    grid = {}
    for w in [float(x) for x in args.aux_weights.split(",")]:
        grid[w] = _train_m2trec(data, args, [1.0, w, w], seeds[0], positions)
        print(f"  tune aux weight {w}: val R@20 {grid[w]['val_recall@20']:.4f} ({grid[w]['epochs']} epochs, "
              f"{grid[w]['seconds']:.0f}s)", flush=True)
    best_w = max(grid, key=lambda w: grid[w]["val_recall@20"])
    runs: dict[str, list[dict]] = {"multi-task": [grid[best_w]], "single-task": []}
    for seed in seeds:
        if seed != seeds[0]:
            runs["multi-task"].append(_train_m2trec(data, args, [1.0, best_w, best_w], seed, positions))
        runs["single-task"].append(_train_m2trec(data, args, [1.0, 0.0, 0.0], seed, positions))
        print(f"  seed {seed}: multi R@20 {runs['multi-task'][-1]['test']['overall']['recall@20']:.4f} "
              f"single R@20 {runs['single-task'][-1]['test']['overall']['recall@20']:.4f}", flush=True)
    table = ablation_table(runs)
    n = runs["single-task"][0]["test"]
    md = (f"# Multi-task ablation on {dataset}\n\n{table}\n"
          f"- {note}; test targets overall/cold/sparse {n['overall']['n']}/{n['cold']['n']}/{n['sparse']['n']}\n"
          f"- multi-task loss weights [1, w, w] (category, subcategory heads), w chosen on validation R@20 with seed "
          f"{seeds[0]} from {args.aux_weights}: " + ", ".join(f"w={w}: {g['val_recall@20']:.4f}" for w, g in grid.items())
          + f" → w={best_w}\n"
          f"- single-task: weights [1, 0, 0] (heads left out of the model)\n"
          f"- settings: hidden {args.hidden}, max_length {args.max_length}, epochs <= {args.epochs}, early stopping "
          f"patience {args.patience} on validation R@20 (best epoch's weights kept), batch {args.batch_size}, lr {args.lr}, "
          f"softmax {args.softmax} ({args.negatives} negatives), threads {torch.get_num_threads()}\n")
    (args.out / dataset).mkdir(parents=True, exist_ok=True)
    (args.out / dataset / "ablation.md").write_text(md)
    (args.out / dataset / "ablation.json").write_text(json.dumps({"grid": {str(k): v for k, v in grid.items()},
                                                                  "best_aux_weight": best_w, "runs": runs}, indent=1))
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="synthetic,ml100k", help="synthetic | synthetic-spark | ml100k | toys | ml100k-loo (comma-separated)")
    p.add_argument("--models", default="", help="comma-separated variants to run: a full label (sasrec) or a prefix "
                   "of labels (m2trec); default all")
    p.add_argument("--rows", type=int, default=30_000, help="synthetic: view events")
    p.add_argument("--epochs", type=int, default=None, help="default 6, leave-one-out data 30")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None, help="default 20 (synthetic, ml100k) or 50 (leave-one-out data: toys, ml100k-loo)")
    p.add_argument("--cold-share", type=float, default=0.1, help="toys: share of the items held out of training")
    p.add_argument("--val-metric", default=None, help="early stopping metric on validation (recall@K, ndcg@K, mrr@K; "
                   "default recall@20, leave-one-out data ndcg@20)")
    p.add_argument("--val-sample", type=int, default=5000, help="validation targets scored after each epoch (a seeded "
                   "sample, 0 = all; the test split is always scored whole)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 examples, leave-one-out data 128 windows")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--softmax", default="sampled", choices=["sampled", "full"])
    p.add_argument("--negatives", type=int, default=None, help="default 256, leave-one-out data 1024")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared machine)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=None, help="seconds per trained variant: training stops after "
                   "the epoch that passes it (best validation epoch kept; the report says so); default none")
    p.add_argument("--resume", action="store_true", help="skip models already in <out>/<dataset>/metrics.json")
    p.add_argument("--ml-history", type=int, default=100, help="ml100k: last ratings per user kept in each split")
    p.add_argument("--ablation", action="store_true", help="the multi-task ablation only (see above)")
    p.add_argument("--seeds", default="0,1,2", help="ablation: model seeds (the first one also tunes the aux weight)")
    p.add_argument("--aux-weights", default="0.1,0.3,1.0", help="ablation: aux loss weights tried on validation")
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better validation "
                   "score (default 1, leave-one-out data 3)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "session_models")
    args = p.parse_args()
    args.given = {k: getattr(args, k) for k in ("max_length", "epochs", "batch_size", "negatives", "patience",
                                                "val_metric")}
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets.split(","):
            if args.ablation:
                md = run_ablation(ds, args, Path(tmp))
                print("\n" + md, flush=True)
                continue
            results, md = run_dataset(ds, args, Path(tmp))
            tables.append(md)
            print("\n" + md, flush=True)
    # the tables of every dataset run so far into this folder (datasets may be run separately)
    reports = sorted(args.out.glob("*/report.md")) + sorted(args.out.glob("*/ablation.md"))
    (args.out / "README.md").write_text("\n".join(r.read_text() for r in reports))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

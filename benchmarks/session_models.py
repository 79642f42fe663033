"""Compare session models in one table: M2TRec (multi-task and single-task), SASRec, GRU4Rec, popularity.

Datasets: the generated `sessions` data (cold-start items released in the last period; time-ordered
split by session start, test target = the last item of each test session) and MovieLens-100K as
per-user, time-ordered sequences (genres and release year as metadata; the last 3 ratings per user
held out, each predicted from the ratings before it; 10% of the movies removed from training and so
cold). Every model is trained on the same split with the same loop (early stopping on validation
Recall@20) and ranked over the whole catalogue, cold items included.

Writes `benchmarks/out/session_models/<dataset>/report.md|metrics.json|recall.png` and
`benchmarks/out/session_models/README.md` (all tables), and prints the tables.

    .venv/bin/python benchmarks/session_models.py                      # both datasets
    .venv/bin/python benchmarks/session_models.py --datasets synthetic --rows 20000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipelines.config import ModelConfig, TrainConfig  # noqa: E402
from pipelines.session_data import load_sessions  # noqa: E402
from pipelines.session_evaluate import comparison_table, evaluate_session_model, write_report  # noqa: E402
from pipelines.session_layout import movielens_layout, synthetic_layout  # noqa: E402
from pipelines.session_train import build_model, train_session_model  # noqa: E402

VARIANTS = {   # in order of interest: a run cut short still has the main rows
    "popularity": dict(name="popularity"),
    "m2trec (multi-task)": dict(name="m2trec", loss_weights=[1.0, 0.3, 0.3]),
    "m2trec (single-task)": dict(name="m2trec", loss_weights=[1.0, 0.0, 0.0]),
    "sasrec": dict(name="sasrec"),
    "gru4rec": dict(name="gru4rec"),
    "m2trec + 512 hashed ids (hybrid)": dict(name="m2trec", loss_weights=[1.0, 0.3, 0.3], hybrid_item_id_buckets=512),
}


def prepare(dataset: str, work: Path, rows: int, seed: int) -> tuple[Path, int, str]:
    """The sessions-stage folder of `dataset`, the number of evaluated positions per test session, a note."""
    out = work / dataset
    if dataset in ("synthetic", "synthetic-spark"):
        from features.synthetic import generate

        raw = work / "raw"
        truth = generate("sessions", rows=rows, seed=seed, output=raw)
        note = f"generated sessions: {truth['rows']:,} events, {truth['n_items']:,} items, seed {seed}"
        if dataset == "synthetic":
            synthetic_layout(raw / truth["file"], raw / truth["items_file"], out)
            return out, 1, note + "; layout by the pandas adapter (pipelines/session_layout.py)"
        spark_layout(raw / truth["file"], raw / truth["items_file"], work, out)
        return out, 1, note + "; layout by the Spark stages ingest + sessions (features/sessions.py)"
    ml = ROOT.parent / "shared" / "data" / "ml-100k"
    movielens_layout(ml, out, holdout=3, cold_share=0.1, seed=seed, max_length=100)
    return out, 3, "MovieLens-100K: last 3 ratings per user held out, 10% of movies cold (removed from training)"


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


def run_dataset(dataset: str, args: argparse.Namespace, work: Path) -> tuple[dict, str]:
    folder, positions, note = prepare(dataset, work, args.rows, args.seed)
    data = load_sessions(folder)
    print(f"\n## {dataset}: {note}; data issues {data.issues}", flush=True)
    results, timings = {}, {}
    saved = args.out / dataset / "metrics.json"
    if args.resume and saved.exists():   # keep the models already measured in an earlier, interrupted run
        results = json.loads(saved.read_text())
        timings = results.pop("_seconds", {})
    for label, overrides in VARIANTS.items():
        if args.models and not any(label.startswith(m) for m in args.models.split(",")):
            continue
        if label in results:
            continue
        mc = ModelConfig(hidden=args.hidden, layers=2, heads=2, dropout=0.2, max_length=args.max_length,
                         softmax=args.softmax, negatives=args.negatives, **overrides)
        tc = TrainConfig(model=mc, epochs=args.epochs, batch_size=args.batch_size, dense_learning_rate=args.lr,
                         early_stopping_patience=1, device=args.device)
        torch.manual_seed(args.seed)
        model = build_model(mc, data)
        val = (lambda m: evaluate_session_model(m, data, "validation", positions=1, ks=[20],
                                                max_length=mc.max_length)["overall"]["recall@20"])
        t0 = time.perf_counter()
        history = train_session_model(model, data, tc, seed=args.seed, validate=None if mc.name == "popularity" else val)
        results[label] = evaluate_session_model(model, data, "test", positions=positions, ks=[10, 20],
                                                max_length=mc.max_length, seed=args.seed)
        timings[label] = time.perf_counter() - t0
        r = results[label]
        print(f"  {label:22s} R@20 {r['overall']['recall@20']:.4f} cold {r['cold']['recall@20']:.4f} "
              f"epochs {len(history['loss'])} (best {history.get('best_epoch', '-')}) {timings[label]:.0f}s", flush=True)
        (args.out / dataset).mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({**results, "_seconds": timings}, indent=1))
    results = {k: results[k] for k in VARIANTS if k in results}
    notes = [note, f"data issues: {data.issues}",
             f"settings: hidden {args.hidden}, max_length {args.max_length}, epochs <= {args.epochs} (early stopping on "
             f"validation Recall@20), batch {args.batch_size}, lr {args.lr}, softmax {args.softmax} "
             f"({args.negatives} uniform negatives + in-batch, logQ), seed {args.seed}, threads {torch.get_num_threads()}",
             "train+eval seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
             "ID models (SASRec, GRU4Rec) give items never seen in training no embedding: score -inf, ranked after every "
             "scorable item, ties broken by a seeded random order; popularity gives them count 0 (same tie rule)."]
    write_report(results, args.out / dataset, title=f"Session models on {dataset}", notes=notes)
    saved.write_text(json.dumps({**results, "_seconds": timings}, indent=1))
    return results, (args.out / dataset / "report.md").read_text()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="synthetic,ml100k", help="synthetic | synthetic-spark | ml100k (comma-separated)")
    p.add_argument("--models", default="", help="comma-separated prefixes of the variants to run (default: all)")
    p.add_argument("--rows", type=int, default=30_000, help="synthetic: view events")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--max-length", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--softmax", default="sampled", choices=["sampled", "full"])
    p.add_argument("--negatives", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared machine)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="skip models already in <out>/<dataset>/metrics.json")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "session_models")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets.split(","):
            results, md = run_dataset(ds, args, Path(tmp))
            tables.append(md)
            print("\n" + md, flush=True)
    # the tables of every dataset run so far into this folder (datasets may be run separately)
    reports = sorted(args.out.glob("*/report.md"))
    (args.out / "README.md").write_text("\n".join(r.read_text() for r in reports))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

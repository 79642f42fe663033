"""MovieLens 100K as a CTR table: DLRM with dense tables vs. the planner at 10x less embedding memory.

label = rating >= 4; categoricals: user, item, gender, occupation, zip prefix, age bucket, release
year, and the item's genres as a multi-hot bag; dense: log1p(age). Time-ordered 80/10/10 split,
encoded like the vocab stage (tests/pipelines/encoded_data.py). Both runs use the single-process
mode of the same training code; the figures are AUC / log loss on the test split and embedding bytes.

    .venv/bin/python benchmarks/ml100k_ctr.py [--epochs 3] [--ratio 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pipelines")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def load_ml100k(folder: Path) -> pd.DataFrame:
    """Ratings joined with user and item attributes, one row per rating."""
    # the shared copy has a header line and '|' separators (see ../shared/data/README)
    r = pd.read_csv(folder / "u.data", sep="|").rename(columns={"timestamp": "ts"})
    u = pd.read_csv(folder / "u.user", sep="|")
    items = pd.read_csv(folder / "u.item", sep="|", encoding="latin-1").rename(columns={"releaseDate": "release"})
    g = items[GENRES].to_numpy().astype(bool)
    items["genres"] = [[GENRES[j] for j in np.flatnonzero(row)] for row in g]
    items["year"] = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64").astype(str)
    df = r.merge(u, on="user").merge(items[["item", "genres", "year"]], on="item")
    df["label"] = (df["rating"] >= 4).astype(int)
    df["zip3"] = df["zip"].astype(str).str[:3]
    df["age_bucket"] = (df["age"] // 10).astype(str)
    df["age_log"] = df["age"]
    for c in ("user", "item"):
        df[c] = df[c].astype(str)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "ml100k")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ratio", type=float, default=10.0)
    ap.add_argument("--dim", type=int, default=16)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from embeddings.config import EmbeddingsConfig
    from embeddings.planner import plan_embeddings
    from encoded_data import encode_ctr_frame
    from pipelines.runtime.config import TrainConfig
    from pipelines.ctr.trainer import train_stage

    cats = ["user", "item", "gender", "occupation", "zip3", "age_bucket", "year"]
    df = load_ml100k(args.data)
    vocab = args.out / "vocab"
    schema = encode_ctr_frame(df, vocab, "label", ["age_log"], cats, "ts", min_count=1, multi=["genres"])
    # scores for the planner: a quick per-feature signal (train-set mutual information of the ids with the label)
    import pyarrow.parquet as pq

    train = pq.read_table(vocab / "encoded" / "train").to_pandas()
    spec = []
    for c in schema["categorical"]:
        col = train[c].map(lambda v: v[0] if len(v) else 0) if c == "genres" else train[c]
        joint = pd.crosstab(col, train["label"]).to_numpy().astype(float) + 1e-9
        p = joint / joint.sum()
        mi = float((p * np.log(p / p.sum(1, keepdims=True) / p.sum(0, keepdims=True))).sum())
        spec.append({"name": c, "role": "categorical", "vocab_size": schema["vocab_sizes"][c], "score": mi, "selected": True})
    results = {}
    for name, emb_cfg in (("dense", EmbeddingsConfig(default_dim=args.dim)),
                          (f"{args.ratio:g}x", EmbeddingsConfig(default_dim=args.dim, compression_ratio=args.ratio))):
        plan = plan_embeddings(spec, emb_cfg)
        pdir = args.out / f"plan_{name}"
        pdir.mkdir(parents=True, exist_ok=True)
        plan.save(pdir / "embedding_plan.json")
        cfg = TrainConfig(batch_size=512, epochs=args.epochs, checkpoint_every=10_000, early_stopping_patience=0)
        cfg.ray.single_process = True
        out = args.out / f"train_{name}"
        shutil.rmtree(out, ignore_errors=True)  # train from scratch: never resume an earlier run's checkpoints
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        s = train_stage({"vocab": vocab, "plan": pdir}, out, cfg, emb_cfg, seed=0, show_progress=False)
        m = json.loads((out / "metrics.json").read_text())
        results[name] = {"test_auc": s["test_auc"], "test_log_loss": s["test_log_loss"], "val_auc": s["val_auc"],
                         "embedding_bytes": m["evaluation"]["embedding_bytes"], "fp32_bytes": m["evaluation"]["embedding_fp32_bytes"],
                         "methods": sorted({t.method for t in plan.tables}), "seconds": round(time.perf_counter() - t0, 1)}
    d, c = results["dense"], results[f"{args.ratio:g}x"]
    print(f"ml-100k CTR (label rating>=4), {schema['rows']} rows per split, {args.epochs} epochs, DLRM dim {args.dim}")
    for name, r in results.items():
        print(f"  {name:>6}: test AUC {r['test_auc']:.4f}  log loss {r['test_log_loss']:.4f}  "
              f"embedding bytes {r['embedding_bytes']:,}  methods {r['methods']}  ({r['seconds']} s)")
    print(f"  memory ratio dense/compressed: {d['embedding_bytes'] / c['embedding_bytes']:.1f}x; "
          f"AUC change: {c['test_auc'] - d['test_auc']:+.4f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

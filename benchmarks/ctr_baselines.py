"""A CTR run's test AUC / log loss beside one-hot logistic regression and gradient-boosted trees on
exactly the same rows.

Reads the run's encoded splits (`<run>/vocab/encoded/train|validation|test/`, `schema.json`) and its
`train/metrics.json`, fits two scikit-learn baselines on the train split, chooses their settings on
the validation split, and scores the test split:

- **logistic regression**: one-hot of every column (categorical ids as they are, multi-valued ids
  as a multi-hot, each dense column as its train-quantile bin plus a missing bin), L2, `C` chosen on
  validation;
- **HistGradientBoosting**: dense columns as numbers, categorical ids as native categories (ids
  past `--hgb-max-categories` share one "rare" category; ids are by train frequency, so that is the
  tail), early stopping on validation.

Prints one table (AUC, log loss, base-rate log loss) and the run / baseline ratios, and writes
`baselines.json` into `--out` (default `<run>/baselines/`). Seeds are stated in the output.

    .venv/bin/python benchmarks/ctr_baselines.py runs/criteo-sample [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from pipelines.ctr.metrics import auc, log_loss  # noqa: E402

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """One encoded split as arrays: label, dense (n x d, NaN-free), categorical ids (n x c), multi-valued id lists."""

    y: np.ndarray
    dense: np.ndarray
    cat: np.ndarray
    multi: dict[str, list]


def load_split(encoded: Path, schema: dict, split: str) -> Split:
    """Read `encoded/<split>/` into arrays (columns named by `schema.json`)."""
    dense_cols = list(schema.get("dense", []))
    cat_cols = list(schema.get("categorical", []))
    multi_cols = list(schema.get("multi_valued", []))
    table = pq.read_table(encoded / split)
    n = table.num_rows

    def column(name: str, dtype) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    y = column(schema["label"], np.int64)
    dense = np.stack([column(c, np.float64) for c in dense_cols], axis=1) if dense_cols else np.zeros((n, 0))
    cat = np.stack([column(c, np.int64) for c in cat_cols], axis=1) if cat_cols else np.zeros((n, 0), np.int64)
    multi = {c: table.column(c).to_pylist() for c in multi_cols}
    return Split(np.nan_to_num(y), np.nan_to_num(dense), cat, multi)


def _quantile_edges(x: np.ndarray, bins: int) -> np.ndarray:
    return np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))


def one_hot(splits: dict[str, Split], schema: dict, bins: int = 20) -> dict[str, sp.csr_matrix]:
    """Sparse one-hot design matrices for every split, with columns fixed on the train split."""
    train = splits["train"]
    blocks: dict[str, list[sp.csr_matrix]] = {s: [] for s in splits}
    sizes = schema.get("vocab_sizes", {})
    for j, name in enumerate(schema.get("categorical", [])):
        width = int(sizes.get(name, int(train.cat[:, j].max()) + 1))
        for s, d in splits.items():
            ids = np.clip(d.cat[:, j], 0, width - 1)
            blocks[s].append(sp.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), ids)), shape=(len(ids), width)))
    for name in schema.get("multi_valued", []):
        width = int(sizes.get(name, 1 + max((max(v) for v in train.multi[name] if v), default=1)))
        for s, d in splits.items():
            rows = [i for i, v in enumerate(d.multi[name]) for _ in (v or [])]
            cols = [min(int(x), width - 1) for v in d.multi[name] for x in (v or [])]
            blocks[s].append(sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(d.y), width)))
    for j in range(train.dense.shape[1]):
        edges = _quantile_edges(train.dense[:, j], bins)
        for s, d in splits.items():
            b = np.searchsorted(edges, d.dense[:, j], side="right")
            blocks[s].append(sp.csr_matrix((np.ones(len(b)), (np.arange(len(b)), b)), shape=(len(b), len(edges) + 1)))
    return {s: sp.hstack(bl, format="csr") for s, bl in blocks.items()}


def fit_logistic(x: dict[str, sp.csr_matrix], y: dict[str, np.ndarray], seed: int,
                 cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)) -> dict:
    """L2 logistic regression on the one-hot matrices; `C` by validation log loss. Returns test probabilities and the choice."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in cs:
        m = LogisticRegression(C=c, max_iter=2000, solver="lbfgs", random_state=seed)
        m.fit(x["train"], y["train"])
        p = m.predict_proba(x["validation"])[:, 1]
        score = log_loss(y["validation"], p)
        if best is None or score < best[0]:
            best = (score, c, m)
    _, c, m = best
    return {"test_p": m.predict_proba(x["test"])[:, 1], "params": {"C": c}}


def fit_hgb(splits: dict[str, Split], seed: int, max_categories: int = 254) -> dict:
    """HistGradientBoosting with native categories (rare ids pooled), early stopping on the validation split."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    def design(d: Split) -> np.ndarray:
        cat = np.minimum(d.cat, max_categories)
        return np.hstack([d.dense, cat.astype(np.float64)])

    n_dense = splits["train"].dense.shape[1]
    is_cat = [False] * n_dense + [True] * splits["train"].cat.shape[1]
    xtr, xva = design(splits["train"]), design(splits["validation"])
    best = None
    for lr in (0.05, 0.1):
        # early stopping on our own validation split (sklearn >= 1.7 takes X_val / y_val)
        m = HistGradientBoostingClassifier(learning_rate=lr, max_iter=1000, categorical_features=is_cat or None,
                                           early_stopping=True, n_iter_no_change=30, scoring="loss", random_state=seed)
        m.fit(xtr, splits["train"].y, X_val=xva, y_val=splits["validation"].y)
        loss = log_loss(splits["validation"].y, m.predict_proba(xva)[:, 1])
        if best is None or loss < best[0]:
            best = (loss, lr, m)
    _, lr, m = best
    return {"test_p": m.predict_proba(design(splits["test"]))[:, 1], "params": {"learning_rate": lr, "iterations": int(m.n_iter_)}}


def base_rate_log_loss(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Log loss of predicting the train click rate for every test row."""
    return log_loss(y_test, np.full(len(y_test), float(np.mean(y_train))))


def compare(run: Path, seed: int = 0, bins: int = 20) -> dict:
    """The run's test figures beside both baselines on the run's own encoded rows.

    Example:
        >>> out = compare(Path("runs/criteo-sample"))                   # doctest: +SKIP
        >>> out["ratios"]["auc_vs_logistic"] >= 1.0                     # doctest: +SKIP
        True
    """
    encoded = run / "vocab" / "encoded"
    schema = json.loads((encoded.parent / "schema.json").read_text())
    splits = {s: load_split(encoded, schema, s) for s in SPLITS}
    y = {s: d.y for s, d in splits.items()}
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    test = metrics.get("evaluation", {}).get("splits", {}).get("test", {})
    model = json.loads((run / "train" / "model" / "model.json").read_text()) if (run / "train" / "model" / "model.json").exists() else {}
    rows = {"run": {"auc": test.get("auc"), "log_loss": test.get("log_loss"),
                    "params": {"model": model.get("model", {}).get("name") if isinstance(model.get("model"), dict) else model.get("model")}}}
    t = time.perf_counter()
    lr = fit_logistic(one_hot(splits, schema, bins), y, seed)
    rows["logistic"] = {"auc": auc(y["test"], lr["test_p"]), "log_loss": log_loss(y["test"], lr["test_p"]),
                        "params": lr["params"], "seconds": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    hgb = fit_hgb(splits, seed)
    rows["hgb"] = {"auc": auc(y["test"], hgb["test_p"]), "log_loss": log_loss(y["test"], hgb["test_p"]),
                   "params": hgb["params"], "seconds": round(time.perf_counter() - t, 1)}
    base = base_rate_log_loss(y["train"], y["test"])
    ratios = {}
    if rows["run"]["auc"] is not None:
        ratios = {"auc_vs_logistic": rows["run"]["auc"] / rows["logistic"]["auc"],
                  "auc_vs_hgb": rows["run"]["auc"] / rows["hgb"]["auc"],
                  "auc_minus_logistic": rows["run"]["auc"] - rows["logistic"]["auc"],
                  "auc_minus_hgb": rows["run"]["auc"] - rows["hgb"]["auc"]}
    return {"run": str(run), "seed": seed, "rows": {s: int(len(d.y)) for s, d in splits.items()},
            "test_positive_rate": float(np.mean(y["test"])), "base_rate_log_loss": base, "models": rows, "ratios": ratios}


def render(result: dict) -> str:
    """A markdown table of `compare`'s result."""
    lines = [f"run {result['run']}  rows {result['rows']}  baseline seed {result['seed']}",
             "", "| model | test AUC | test log loss | settings |", "|---|---|---|---|"]
    for name, r in result["models"].items():
        a = "n/a" if r["auc"] is None else f"{r['auc']:.4f}"
        ll = "n/a" if r["log_loss"] is None else f"{r['log_loss']:.4f}"
        lines.append(f"| {name} | {a} | {ll} | {r['params']} |")
    lines.append(f"| base rate | 0.5000 | {result['base_rate_log_loss']:.4f} | train click rate |")
    if result["ratios"]:
        q = result["ratios"]
        lines += ["", f"run AUC / logistic AUC = {q['auc_vs_logistic']:.4f} ({q['auc_minus_logistic']:+.4f}); "
                      f"run AUC / GBDT AUC = {q['auc_vs_hgb']:.4f} ({q['auc_minus_hgb']:+.4f})"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished CTR run folder (with vocab/ and train/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the baselines")
    ap.add_argument("--bins", type=int, default=20, help="quantile bins per dense column in the one-hot")
    ap.add_argument("--out", type=Path, default=None, help="folder for baselines.json (default <run>/baselines)")
    args = ap.parse_args()
    for need in (args.run / "vocab" / "schema.json", args.run / "train" / "metrics.json"):
        if not need.exists():
            sys.exit(f"{need}: not found; pass a finished CTR run folder (sparserec run --config ... wrote it)")
    result = compare(args.run, args.seed, args.bins)
    print(render(result))
    out = args.out or args.run / "baselines"
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {out / 'baselines.json'}")


if __name__ == "__main__":
    main()

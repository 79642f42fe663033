"""AUC vs. embedding memory: dense against every compression method and DSL, at 1x..100x less memory.

Trains the same small CTR model (models/dlrm.py DLRM over `PlanEmbeddings`, wrapped by
`fbgemm_model`: FBGEMM TBE lookups with a fused row-wise Adagrad) on
- `ctr`: generated Criteo-like logs (features.synthetic), categoricals encoded with a quick
  numpy vocabulary (ids by train frequency, 0 missing, 1 rare/unseen), 13 numeric columns as
  log1p;
- `ml100k`: MovieLens 100K (../shared/data/ml-100k), label rating >= 4; user id, item id, age
  bucket, gender, occupation, zip prefix, release year and genres (multi-valued) as categoricals;
both split by time (first 80% train, last 20% test). For each method M and ratio r the planner is
asked for a plan with methods [dense, M] at compression_ratio r (so it chooses which tables to
compress, by a noise-corrected mutual-information score computed on the train split); `planner` may use
every method; `dsl` trains every dense table sparse at density 1/r (and at 0.2 = 80% sparsity).
Every model is evaluated on its EXPORTED form (FBGEMM IntNBit TBE), so int8/int4 are measured
as served. Memory is the export's bytes (DSL exact/lazy: the `pruned` export, the smallest of
fp16/int8/int4 kept rows within `dsl.export_error`, plus an int32 remap per id when rows are
dropped; row: the compact table as it trained, fp16, plus the remap). `--dsl-modes` adds the DSL
modes at 80% sparsity (targets: lazy within 0.002 AUC of exact, row within 0.005; exported bytes
row <= 0.25x dense fp32, best of exact/lazy <= 0.35x).

Writes benchmarks/out/compression_tradeoff.md and .png, prints the table and whether the targets
are met (at 10x the best method within 0.002 AUC of dense; DSL at 80% sparsity within 0.002).

    .venv/bin/python benchmarks/compression_tradeoff.py                 # default: a few minutes
    .venv/bin/python benchmarks/compression_tradeoff.py --ctr-rows 500000 --epochs 2 --seeds 3   # bigger
    .venv/bin/python benchmarks/compression_tradeoff.py --methods dsl --ratios 1 --dsl-modes exact,lazy,row --seeds 3
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


# -- data -------------------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    dense_train: np.ndarray
    dense_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    # feature -> (values, lengths) per split; single-valued features have lengths of 1
    sparse_train: dict[str, tuple[np.ndarray, np.ndarray]]
    sparse_test: dict[str, tuple[np.ndarray, np.ndarray]]
    vocab: dict[str, int]
    counts: dict[str, np.ndarray]
    spec: list[dict] = field(default_factory=list)


def _vocab(train: pd.Series, min_count: int) -> tuple[dict, np.ndarray]:
    """value -> id (2.. by train count desc, ties by value); counts per id (0 missing, 1 rare)."""
    vc = train.dropna().astype(str).value_counts()
    vc = vc[vc >= min_count]
    order = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))
    mapping = {v: i + 2 for i, (v, _) in enumerate(order)}
    return mapping, np.array([0, 0] + [c for _, c in order], dtype=np.int64)


def _encode(s: pd.Series, mapping: dict) -> np.ndarray:
    return s.astype(object).map(lambda v: 0 if v is None or (isinstance(v, float) and math.isnan(v)) else mapping.get(str(v), 1)).to_numpy(np.int64)


def _single(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ids, np.ones(len(ids), dtype=np.int64)


def _mi_score(ids: np.ndarray, y: np.ndarray) -> float:
    """Noise-corrected mutual information (nats): plug-in MI minus its expectation under a random
    permutation (features/mi.py, as the rank stage's OutRank-style estimator does)."""
    from features.mi import count_histogram, expected_mutual_information, mutual_information

    k = int(ids.max()) + 1
    joint = np.bincount(ids * 2 + y, minlength=2 * k).reshape(k, 2)
    joint = joint[joint.sum(1) > 0]
    rows, mult = count_histogram(joint.sum(1))
    emi = expected_mutual_information(rows, mult, joint.sum(0))
    return float(mutual_information(joint) - emi)


def _finish(name, dense, y, cats_train, cats_test, multi, cut, min_count) -> Dataset:
    sparse_train, sparse_test, vocab, counts, spec = {}, {}, {}, {}, []
    for f, (tr, te) in cats_train.items():
        mapping, cnt = _vocab(tr, min_count)
        vocab[f] = len(cnt)
        counts[f] = cnt
        a, b = _encode(tr, mapping), _encode(te, mapping)
        sparse_train[f], sparse_test[f] = _single(a), _single(b)
        spec.append({"name": f, "role": "categorical", "vocab_size": len(cnt), "score": _mi_score(a, y[:cut]), "selected": True})
    for f, (tr_lists, te_lists) in multi.items():
        flat = pd.Series([v for lst in tr_lists for v in lst])
        mapping, cnt = _vocab(flat, min_count)
        vocab[f] = len(cnt)
        counts[f] = cnt

        def enc(lists):
            vals = np.array([mapping.get(str(v), 1) for lst in lists for v in lst], dtype=np.int64)
            return vals, np.array([len(lst) for lst in lists], dtype=np.int64)
        sparse_train[f], sparse_test[f] = enc(tr_lists), enc(te_lists)
        first = np.array([mapping.get(str(lst[0]), 1) if lst else 0 for lst in tr_lists], dtype=np.int64)
        spec.append({"name": f, "role": "multi_valued", "vocab_size": len(cnt), "score": _mi_score(first, y[:cut]), "selected": True})
    return Dataset(name, dense[:cut], dense[cut:], y[:cut], y[cut:], sparse_train, sparse_test, vocab, counts, spec)


def load_ctr(rows: int, seed: int, min_count: int) -> Dataset:
    from features.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        truth = generate("ctr", rows=rows, seed=seed, output=Path(tmp))
        df = pd.read_csv(Path(tmp) / truth["file"], sep="\t", dtype={c: "string" for c in truth["categorical"]})
    df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    cut = int(len(df) * 0.8)
    dense = np.log1p(np.maximum(df[truth["dense"]].astype("float64").fillna(0).to_numpy(), 0)).astype(np.float32)
    y = df["label"].to_numpy(np.int64)
    cats = {c: (df[c].iloc[:cut].astype(object).where(df[c].iloc[:cut].notna(), None),
                df[c].iloc[cut:].astype(object).where(df[c].iloc[cut:].notna(), None)) for c in truth["categorical"]}
    return _finish("ctr", dense, y, cats, {}, {}, cut, min_count)


def load_ml100k(min_count: int) -> Dataset:
    ratings = pd.read_csv(ML100K / "u.data", sep="|")
    users = pd.read_csv(ML100K / "u.user", sep="|")
    items = pd.read_csv(ML100K / "u.item", sep="|", encoding="latin-1")
    genres = list(items.columns[5:])
    items["year"] = items["releaseDate"].astype(str).str[-4:]
    items["genres"] = [[g for g in genres if row[g] == 1] for _, row in items[genres].iterrows()]
    users["age_bucket"] = (users["age"] // 10).astype(str)
    users["zip3"] = users["zip"].astype(str).str[:3]
    df = ratings.merge(users, on="user").merge(items[["item", "year", "genres"]], on="item")
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(df) * 0.8)
    y = (df["rating"] >= 4).to_numpy(np.int64)
    cols = {"user": "user", "item": "item", "age_bucket": "age_bucket", "gender": "gender",
            "occupation": "occupation", "zip3": "zip3", "year": "year"}
    cats = {f: (df[c].iloc[:cut].astype(str), df[c].iloc[cut:].astype(str)) for f, c in cols.items()}
    multi = {"genres": (list(df["genres"].iloc[:cut]), list(df["genres"].iloc[cut:]))}
    dense = np.zeros((len(df), 0), dtype=np.float32)
    return _finish("ml100k", dense, y, cats, {}, multi, cut, min_count)


def batches(ds: Dataset, split: str, batch: int):
    """Precomputed (dense, KJT, label) batches in time order."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    dense = ds.dense_train if split == "train" else ds.dense_test
    y = ds.y_train if split == "train" else ds.y_test
    sparse = ds.sparse_train if split == "train" else ds.sparse_test
    offsets = {f: np.concatenate([[0], np.cumsum(l)]) for f, (_, l) in sparse.items()}
    out = []
    for lo in range(0, len(y), batch):
        hi = min(lo + batch, len(y))
        vals, lens = [], []
        for f, (v, l) in sparse.items():
            vals.append(v[offsets[f][lo]:offsets[f][hi]])
            lens.append(l[lo:hi])
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(sparse), values=torch.from_numpy(np.concatenate(vals)),
                                                  lengths=torch.from_numpy(np.concatenate(lens)).int())
        out.append((torch.from_numpy(dense[lo:hi]), kjt, torch.from_numpy(y[lo:hi]).float()))
    return out


# -- one configuration ------------------------------------------------------------------------

@dataclass
class Result:
    dataset: str
    method: str
    target: str
    bytes: int
    ratio: float
    auc: float
    logloss: float
    seconds: float
    note: str = ""
    auc_sd: float = float("nan")  # over seeds


def train_eval(ds: Dataset, plan, train_b, test_b, args, seed: int, dsl_density: float | None = None,
               dsl_mode: str = "exact") -> tuple[float, float, int, float]:
    """Train on the FBGEMM/DMP path, export, evaluate the served model. Returns auc, logloss, bytes, s."""
    import torch
    from torch import nn

    from embeddings.config import DSLConfig, EmbeddingsConfig
    from embeddings.export import export_embeddings, load_exported
    from embeddings.sharding import dense_optimizer, fbgemm_model
    from embeddings.tables import build_embeddings
    from models.dlrm import DLRM
    from pipelines.ctr.metrics import auc, log_loss

    t0 = time.time()
    torch.manual_seed(seed)
    emb = build_embeddings(plan)
    model = DLRM(emb, num_features=len(emb.features), embedding_dim=args.dim, dense_in=ds.dense_train.shape[1],
                 dense_arch=[32], over_arch=[64, 32])
    dmp = fbgemm_model(model, EmbeddingsConfig(optimizer="rowwise_adagrad", learning_rate=args.sparse_lr), torch.device("cpu"))
    opt = dense_optimizer(dmp, lr=args.dense_lr)
    steps = args.epochs * len(train_b)
    dsl = None
    if dsl_density is not None:
        from embeddings.dsl import make_controller

        freqs = {f"t_{f}": torch.from_numpy(ds.counts[f]).float() for f in emb.features}
        dsl = make_controller(dmp, DSLConfig(enabled=True, mode=dsl_mode, density=dsl_density,
                                             update_every=max(1, steps // 20), init="frequency"),
                              total_steps=steps, frequencies=freqs, seed=seed)
        handle = dmp.module.sparse.register_forward_hook(lambda m, inp, out: dsl.observe(inp[0], out) if m.training else None)
    rng = np.random.default_rng(seed)
    step = 0
    dmp.train()
    for epoch in range(args.epochs):
        order = np.arange(len(train_b)) if epoch == 0 else rng.permutation(len(train_b))
        for i in order:
            dense, kjt, y = train_b[i]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(dmp(dense, kjt), y)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{ds.name}: loss is {loss.item()} at step {step}")
            loss.backward()
            opt.step()
            if dsl is not None:
                dsl.after_step(step)
            step += 1
    if dsl is not None:
        handle.remove()
    with tempfile.TemporaryDirectory() as tmp:
        report = export_embeddings(dmp, Path(tmp) / "emb.pt")
        served = load_exported(Path(tmp) / "emb.pt")
    model = dmp.module
    model.sparse = served
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for dense, kjt, y in test_b:
            probs.append(torch.sigmoid(model(dense, kjt)).numpy())
            labels.append(y.numpy())
    p, l = np.concatenate(probs), np.concatenate(labels)
    nbytes = report["bytes_after"]
    return auc(l, p), log_loss(l, p), nbytes, time.time() - t0


def run_dataset(ds: Dataset, args) -> list[Result]:
    from embeddings.config import EmbeddingsConfig
    from embeddings.errors import BudgetError
    from embeddings.planner import plan_embeddings

    train_b, test_b = batches(ds, "train", args.batch), batches(ds, "test", args.batch)
    reference = sum(v * args.dim * 4 for v in ds.vocab.values())
    results: list[Result] = []

    def run(method: str, target: str, cfg: EmbeddingsConfig, dsl_density: float | None = None, dsl_mode: str = "exact") -> None:
        try:
            plan = plan_embeddings(ds.spec, cfg)
        except BudgetError as err:
            results.append(Result(ds.name, method, target, 0, float("nan"), float("nan"), float("nan"), 0.0, f"infeasible: {str(err)[:60]}"))
            print(f"  {ds.name:7s} {method:10s} {target:>5s}  infeasible", flush=True)
            return
        aucs, lls, secs, nbytes = [], [], [], 0
        for s in range(args.seeds):
            a, ll, nbytes, sec = train_eval(ds, plan, train_b, test_b, args, seed=s, dsl_density=dsl_density, dsl_mode=dsl_mode)
            aucs.append(a), lls.append(ll), secs.append(sec)
        methods = sorted({t.method for t in plan.tables})
        note = f"{len(plan.tables)} tables: {','.join(methods)}" + (f"; {len(plan.dropped_features)} dropped" if plan.dropped_features else "")
        r = Result(ds.name, method, target, nbytes, reference / nbytes, float(np.mean(aucs)), float(np.mean(lls)), float(np.sum(secs)), note,
                   auc_sd=float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"))
        results.append(r)
        print(f"  {ds.name:7s} {method:10s} {target:>5s}  bytes {nbytes:>11,}  {r.ratio:6.1f}x  AUC {r.auc:.4f}  {r.seconds:5.1f}s  {note}", flush=True)

    dim = args.dim
    run("dense", "1x", EmbeddingsConfig(default_dim=dim, methods=["dense"]))
    for method in args.methods:
        for r in args.ratios:
            if r == 1:
                continue
            if method == "dsl":
                run("dsl", f"d={1 / r:.2g}", _dsl_cfg(dim, 1.0 / r), dsl_density=1.0 / r)
            else:
                methods = ["dense", "hashing", "qr", "mixed_dim", "int8", "int4", "drop"] if method == "planner" else ["dense", method]
                run(method, f"{r:g}x", EmbeddingsConfig(default_dim=dim, compression_ratio=r, methods=methods))
    if "dsl" in args.methods:
        run("dsl", "80%sp", _dsl_cfg(dim, 0.2), dsl_density=0.2)
    for mode in args.dsl_modes:  # the DSL modes at 80% sparsity (dsl = exact above)
        if mode != "exact" or "dsl" not in args.methods:
            run(f"dsl-{mode}", "80%sp", _dsl_cfg(dim, 0.2, mode), dsl_density=0.2, dsl_mode=mode)
    return results


def _dsl_cfg(dim: int, density: float, mode: str = "exact"):
    """Every table dense-trained sparse at `density` (the planner makes them `pruned` when registered;
    row mode: `params.rows_kept`; exact and lazy: the compact export's `max_error`)."""
    from embeddings.config import DSLConfig, EmbeddingsConfig

    return EmbeddingsConfig(default_dim=dim, methods=["dense"], dsl=DSLConfig(enabled=True, density=density, mode=mode))


# -- report -----------------------------------------------------------------------------------

def write_report(results: list[Result], args, wall: float) -> tuple[str, list[str]]:
    lines = ["# Compression trade-off: AUC vs. embedding memory", "",
             f"Command: `{' '.join(sys.argv)}`  ",
             f"Settings: ctr rows {args.ctr_rows:,}, epochs {args.epochs}, batch {args.batch}, dim {args.dim}, seeds {args.seeds}; "
             f"wall time {wall:.0f} s on a shared 2-core machine (timings are noisy).", "",
             "Memory is the exported artifact's bytes (FBGEMM IntNBit TBE rows + projections; DSL exact/lazy: the "
             "`pruned` export, the smallest of fp16/int8/int4 kept rows within dsl.export_error, plus an int32 remap "
             "per id when rows are dropped; DSL row: the compact table as trained, fp16, plus the remap). DSL targets are "
             "densities (d=0.25 is 4x fewer active weights), not byte ratios. Ratio is against every "
             "feature dense fp32 at the same dim. AUC is of the exported (served) model on the last 20% by time, "
             "the mean over seeds (AUC sd: their standard deviation; the standard error of a mean is sd / sqrt(seeds)).", ""]
    verdicts = []
    for name in dict.fromkeys(r.dataset for r in results):
        rs = [r for r in results if r.dataset == name]
        dense = next(r for r in rs if r.method == "dense")
        lines += [f"## {name}", "", "| method | target | bytes | ratio | AUC | AUC sd | ΔAUC vs dense | logloss | train+eval s | plan |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rs:
            if math.isnan(r.auc):
                lines.append(f"| {r.method} | {r.target} | - | - | - | - | - | - | - | {r.note} |")
            else:
                lines.append(f"| {r.method} | {r.target} | {r.bytes:,} | {r.ratio:.1f}x | {r.auc:.4f} | {r.auc_sd:.4f} | {r.auc - dense.auc:+.4f} | "
                             f"{r.logloss:.4f} | {r.seconds:.1f} | {r.note} |")
        at10 = [r for r in rs if r.target == "10x" and not math.isnan(r.auc) and r.method != "dsl"]
        if at10:
            best = max(at10, key=lambda r: r.auc)
            gap = dense.auc - best.auc
            verdicts.append(f"{name}: at 10x the best method is {best.method} (AUC {best.auc:.4f}, dense {dense.auc:.4f}, "
                            f"gap {gap:+.4f}): target (gap <= 0.002) {'MET' if gap <= 0.002 else 'NOT met'}")
        modes = {r.method: r for r in rs if r.target == "80%sp" and not math.isnan(r.auc)}
        exact = modes.get("dsl") or modes.get("dsl-exact")
        for name_m, bound in (("dsl-lazy", 0.002), ("dsl-row", 0.005)):
            if exact is not None and name_m in modes:
                gap = exact.auc - modes[name_m].auc
                verdicts.append(f"{name}: {name_m} at 80% sparsity AUC {modes[name_m].auc:.4f} vs exact {exact.auc:.4f} "
                                f"(gap {gap:+.4f}): target (gap <= {bound}) {'MET' if gap <= bound else 'NOT met'}")
        if "dsl-row" in modes:
            share = 1 / modes["dsl-row"].ratio
            verdicts.append(f"{name}: dsl-row exported bytes {share:.3f}x dense fp32: target (<= 0.25x) {'MET' if share <= 0.25 else 'NOT met'}")
        weight_modes = [modes[m] for m in ("dsl", "dsl-exact", "dsl-lazy") if m in modes]
        if weight_modes:
            share = 1 / max(r.ratio for r in weight_modes)
            verdicts.append(f"{name}: best of exact/lazy exported bytes {share:.3f}x dense fp32: target (<= 0.35x) "
                            f"{'MET' if share <= 0.35 else 'NOT met'}")
        dsl80 = [r for r in rs if r.method == "dsl" and r.target == "80%sp" and not math.isnan(r.auc)]
        if dsl80:
            gap = dense.auc - dsl80[0].auc
            verdicts.append(f"{name}: DSL at 80% sparsity AUC {dsl80[0].auc:.4f} vs dense {dense.auc:.4f} "
                            f"(gap {gap:+.4f}): target (gap <= 0.002) {'MET' if gap <= 0.002 else 'NOT met'}")
        lines.append("")
    lines += ["## Targets", ""] + [f"- {v}" for v in verdicts] + [""]
    return "\n".join(lines), verdicts


def plot(results: list[Result], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = list(dict.fromkeys(r.dataset for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        rs = [r for r in results if r.dataset == name and not math.isnan(r.auc)]
        dense = next(r for r in rs if r.method == "dense")
        ax.axhline(dense.auc, color="black", lw=1, ls="--", label=f"dense ({dense.bytes / 1e6:.2f} MB)")
        ax.axhspan(dense.auc - 0.002, dense.auc, color="grey", alpha=0.15, label="within 0.002 of dense")
        for method in dict.fromkeys(r.method for r in rs if r.method != "dense"):
            pts = sorted((r.bytes, r.auc) for r in rs if r.method == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.plot([dense.bytes], [dense.auc], marker="s", color="black")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on narrow ranges
        ax.set_xlabel("embedding memory (bytes, exported)")
        ax.set_ylabel("test AUC")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ctr,ml100k", help="comma list of ctr, ml100k")
    ap.add_argument("--ctr-rows", type=int, default=60_000, help="rows of generated ctr data")
    ap.add_argument("--ratios", default="1,4,10,30,100", help="comma list of memory reduction factors")
    ap.add_argument("--methods", default="hashing,qr,mixed_dim,int8,int4,planner,dsl", help="comma list (planner = all methods; dsl)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds averaged per configuration")
    ap.add_argument("--min-count", type=int, default=2, help="vocabulary frequency threshold (rarer values share id 1)")
    ap.add_argument("--sparse-lr", type=float, default=0.05)
    ap.add_argument("--dense-lr", type=float, default=2e-3)
    ap.add_argument("--dsl-modes", default="", help="comma list of DSL modes (exact, lazy, row) also run at 80%% sparsity")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    args.dsl_modes = [m for m in args.dsl_modes.split(",") if m]
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.time()
    results: list[Result] = []
    for name in args.datasets.split(","):
        ds = load_ctr(args.ctr_rows, seed=0, min_count=args.min_count) if name == "ctr" else load_ml100k(args.min_count)
        print(f"{name}: {len(ds.y_train):,} train / {len(ds.y_test):,} test rows, {len(ds.vocab)} features, "
              f"{sum(ds.vocab.values()):,} vocabulary rows", flush=True)
        results += run_dataset(ds, args)
    args.out.mkdir(parents=True, exist_ok=True)
    text, verdicts = write_report(results, args, time.time() - t0)
    (args.out / "compression_tradeoff.md").write_text(text)
    plot(results, args.out / "compression_tradeoff.png")
    print("\n".join(verdicts))
    print(f"wrote {args.out / 'compression_tradeoff.md'} and {args.out / 'compression_tradeoff.png'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

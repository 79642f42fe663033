"""Evaluate session models on a split: next-item ranking over the whole catalogue, by slice.

Candidates are every catalogue item available at evaluation time, cold items included. The
catalogue is encoded once per evaluation (in chunks). A model that cannot score an item (the
ID-based baselines on items never seen in training) gives it `-inf`: it ranks after every
scorable item, and ties (there, and among equal popularity counts) are broken by a seeded random
order of the catalogue. Slices: `overall`, `warm` (target seen in training), `cold` (target never
seen in training) and `sparse`
(target seen 1 to `sparse_below - 1` times in training). Also: `top1_category_acc` (the top-scored
item's category equals the target's, for every model), `head_<attr>_acc` (M2TRec's task heads),
`per_category` (by the target item's primary category: `n`, Recall@K, `top1_category_acc` and,
for M2TRec, `head_<category>_acc`; keyed by the category's raw value) and `embedding_bytes`
(memory of the item representations).

Example::

    result = evaluate_session_model(model, data, "test", positions=1)
    result["overall"]["recall@20"] >= result["overall"]["recall@10"]
    # -> True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipelines.runtime.config import TrainConfig
from pipelines.sessions.data import SessionData, load_sessions
from pipelines.sessions.model import load_model
from pipelines.sessions.ranking_metrics import ranking_metrics, ranks_from_scores

SLICES = ("overall", "warm", "cold", "sparse")


@torch.no_grad()
def evaluate_session_model(model: nn.Module, data: SessionData, split: str = "test", positions: int = 1,
                           ks: tuple[int, ...] | list[int] = (10, 20), max_length: int = 50,
                           sparse_below: int = 5, category_attribute: str | None = "category",
                           batch_size: int = 512, chunk_size: int = 4096, seed: int = 0,
                           sample: int | None = None) -> dict[str, Any]:
    """Metrics of `model` on the last `positions` items of each session of `split`.

    `sample`: a seeded random `sample` of those targets only (e.g. a cheaper validation score every epoch).
    A model with a `scorer(chunk_size)` method (`models/cold_ranks.py`) scores sessions through it."""
    was_training = model.training
    model.eval()
    device = next(iter([*model.parameters(), *model.buffers()])).device
    ex = data.examples(split, max_length, positions=positions)
    if sample is not None and sample < len(ex):
        ex = ex.subset(torch.randperm(len(ex), generator=torch.Generator().manual_seed(seed))[:sample].sort().values)
    scorer = model.scorer(chunk_size) if hasattr(model, "scorer") else None
    cat_emb = model.encode_catalogue(chunk_size=chunk_size)
    unscorable = ~model.scorable().to(device)
    bias = model.score_bias() if hasattr(model, "score_bias") else None   # hybrid M2TRec: cold_offset
    prio = torch.randperm(data.n_items + 1, generator=torch.Generator().manual_seed(seed)).to(device)
    counts = data.train_counts()
    category = data.features.categorical.get(category_attribute) if category_attribute else None
    ranks, top1_cat_ok, target_cat = [], [], []
    head_ok: dict[str, list[torch.Tensor]] = {}
    for s in range(0, len(ex), batch_size):
        items = ex.items[s:s + batch_size].to(device)
        lengths = ex.lengths[s:s + batch_size].to(device)
        targets = ex.targets[s:s + batch_size].to(device)
        width = int(lengths.max())
        rep, tasks = model(items[:, :width], lengths)
        scores = rep @ cat_emb.T if scorer is None else scorer(items[:, :width], lengths, prio)
        if bias is not None:
            scores = scores + bias.to(device)[None, :]
        scores[:, unscorable] = -torch.inf
        ranks.append(ranks_from_scores(scores, targets, prio).cpu())
        if category is not None:
            cat = category.to(device)
            top = scores.argmax(1)
            top1_cat_ok.append((cat[top] == cat[targets]).cpu())
            target_cat.append(cat[targets].cpu())
        if tasks and hasattr(model, "catalogue"):   # M2TRec task heads (also through ColdRankHybrid)
            for a, logits in tasks.items():
                y = model.catalogue.categorical[a].to(device)[targets]
                head_ok.setdefault(a, []).append((logits.argmax(1) == y).cpu())
    model.train(was_training)
    r = torch.cat(ranks).numpy() if ranks else np.zeros(0, np.int64)
    seen = counts[ex.targets].numpy()
    masks = {"overall": np.ones(len(r), bool), "warm": seen > 0, "cold": seen == 0,
             "sparse": (seen > 0) & (seen < sparse_below)}
    out: dict[str, Any] = {s: ranking_metrics(r[m], ks) for s, m in masks.items()}
    out["catalogue_items"] = data.n_items
    out["embedding_bytes"] = int(model.embedding_bytes())
    if top1_cat_ok:
        out["top1_category_acc"] = float(torch.cat(top1_cat_ok).float().mean())
    for a, oks in head_ok.items():
        out[f"head_{a}_acc"] = float(torch.cat(oks).float().mean())
    if target_cat:
        heads = {a: torch.cat(oks).numpy() for a, oks in head_ok.items() if a == category_attribute}
        out["per_category"] = per_category(data, category_attribute, torch.cat(target_cat).numpy(), r,
                                           torch.cat(top1_cat_ok).numpy(), heads, ks)
    return out


def validator(data: SessionData, train: TrainConfig) -> Callable[[nn.Module], float] | None:
    """Validation Recall@max(eval_k) (last item of each validation session), or None without validation sessions."""
    if not data.sessions["validation"]:
        return None
    k = max(train.eval_k)
    return lambda m: evaluate_session_model(m, data, "validation", positions=1, ks=[k],
                                            max_length=train.model.max_length)["overall"][f"recall@{k}"]


def per_category(data: SessionData, attribute: str, target_cat: np.ndarray, ranks: np.ndarray, top1_ok: np.ndarray,
                 head_ok: dict[str, np.ndarray], ks: tuple[int, ...] | list[int]) -> dict[str, dict[str, float]]:
    """Metrics by the target item's `attribute` value: {raw value: {n, recall@K, top1_<attr>_acc, head_<attr>_acc}}.

    Example (2 targets of category id 2, one found at rank 1, one at rank 30):
        >>> d = SessionData([], None, {}, {}, value_names={"category": {2: "books"}})
        >>> per_category(d, "category", np.array([2, 2]), np.array([1, 30]), np.array([True, False]), {}, [20])
        {'books': {'n': 2, 'recall@20': 0.5, 'top1_category_acc': 0.5}}
    """
    out: dict[str, dict[str, float]] = {}
    for c in np.unique(target_cat):
        m = target_cat == c
        row: dict[str, float] = {"n": int(m.sum()), **{f"recall@{k}": float(np.mean(ranks[m] <= k)) for k in ks},
                                 f"top1_{attribute}_acc": float(top1_ok[m].mean())}
        for a, ok in head_ok.items():
            row[f"head_{a}_acc"] = float(ok[m].mean())
        out[data.value_name(attribute, c)] = row
    return out


def comparison_table(results: dict[str, dict[str, Any]], k: int = 20) -> str:
    """Markdown table: one row per model, Recall/MRR/NDCG@k by slice, category accuracy, memory."""
    head = ["model", f"R@{k} all", f"MRR@{k} all", f"NDCG@{k} all", f"R@{k} cold", f"NDCG@{k} cold",
            f"R@{k} sparse", "R@10 all", "top1 cat acc", "head cat acc", "item-emb bytes", "n all/cold/sparse"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: Any) -> str:
        return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"

    for name, r in results.items():
        o, c, s = r["overall"], r["cold"], r["sparse"]
        head_acc = next((v for key, v in r.items() if key.startswith("head_") and key.endswith("_acc")), None)
        row = [name, f(o[f"recall@{k}"]), f(o[f"mrr@{k}"]), f(o[f"ndcg@{k}"]), f(c[f"recall@{k}"]),
               f(c[f"ndcg@{k}"]), f(s[f"recall@{k}"]), f(o.get("recall@10")), f(r.get("top1_category_acc")),
               f(head_acc), f"{r['embedding_bytes']:,}", f"{o['n']}/{c['n']}/{s['n']}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def category_table(result: dict[str, Any], k: int = 20, attribute: str = "category") -> str:
    """Markdown table of `result["per_category"]`: one row per category (most targets first)."""
    cats = result.get("per_category") or {}
    if not cats:
        return ""
    cols = [f"recall@{k}", f"top1_{attribute}_acc"] + sorted({c for r in cats.values() for c in r if c.startswith("head_")})
    lines = [f"| {attribute} | n | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for name, r in sorted(cats.items(), key=lambda kv: (-kv[1]["n"], kv[0])):
        lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{r[c]:.4f}" if c in r else "–" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, dict[str, Any]], out: Path, title: str = "Session models", k: int = 20,
                 notes: list[str] | None = None) -> dict[str, Path]:
    """`report.md` (table + notes), `metrics.json` and `recall.png` (Recall@k by slice and model) under `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = comparison_table(results, k)
    md = f"# {title}\n\n{table}\n" + "".join(f"- {n}\n" for n in (notes or []))
    (out / "report.md").write_text(md)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(results)
    width = 0.8 / len(SLICES)
    for j, sl in enumerate(SLICES):
        vals = [np.nan_to_num(results[n][sl][f"recall@{k}"]) for n in names]
        ax.bar(np.arange(len(names)) + (j - 1) * width, vals, width, label=sl)
    ax.set_xticks(np.arange(len(names)), names, rotation=15)
    ax.set_ylabel(f"Recall@{k}")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "recall.png", dpi=110)
    plt.close(fig)
    return {"report": out / "report.md", "metrics": out / "metrics.json", "plot": out / "recall.png"}


def evaluate_stage(inputs: dict[str, Path], out: Path, positions: int = 1, ks: list[int] | None = None,
                   seed: int = 0, title: str = "Session models") -> dict:
    """Stage: evaluate saved models (`inputs`: `sessions` plus one entry per model folder) on the test split.

    Writes `report.md`, `metrics.json` and `recall.png` under `out`.
    """
    data = load_sessions(inputs["sessions"])
    ks = ks or [10, 20]
    results = {}
    for name, folder in inputs.items():
        if name == "sessions":
            continue
        model, cfg = load_model(folder, data)
        results[name] = evaluate_session_model(model, data, "test", positions=positions, ks=ks,
                                               max_length=cfg.max_length, seed=seed)
    write_report(results, out, title, k=max(ks), notes=[f"data issues: {data.issues}"])
    return {"rows_in": len(data.sessions["test"]), "models": list(results),
            **{n: r["overall"] for n, r in results.items()}}

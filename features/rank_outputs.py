"""Files of the rank stage: ranking.tsv, pairs.tsv, selection.tsv, feature_spec.json, top_features.png.

Example:
    >>> import tempfile
    >>> from features.rank_result import FeatureScore, RankResult
    >>> feats = [FeatureScore("C1", "categorical", 3, 1.0, 0.2, 0.18), FeatureScore("C2", "categorical", 5, 0.9, 0.05, 0.01)]
    >>> result = RankResult("label", ["0", "1"], 100, "mi-permutation", True, feats,
    ...                     selection=[("C1", 0.18, True), ("C2", 0.01, True)])
    >>> out = Path(tempfile.mkdtemp())
    >>> write_outputs(out, result, RankConfig(), vocab_sizes={"C1": 5})
    >>> spec = json.loads((out / "feature_spec.json").read_text())
    >>> [(f["name"], f["vocab_size"], f["rank"]) for f in spec["features"]]
    [('C1', 5, 1), ('C2', 7, 2)]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from features.config import RankConfig
from features.numeric import bucket_column
from features.rank_result import RankResult


def _f(x: float) -> str:
    return format(float(x), ".12g")


def write_outputs(out: Path, res: RankResult, cfg: RankConfig, vocab_sizes: Mapping[str, int] | None) -> None:
    """Write every output file of the rank stage into `out`."""
    selected = {n: sel for n, _, sel in res.selection}
    lines = ["feature\tcardinality\tcoverage\tmi\tscore\trank"]
    for r, s in enumerate(res.features, start=1):
        lines.append(f"{s.name}\t{s.cardinality}\t{_f(s.coverage)}\t{_f(s.mi)}\t{_f(s.score)}\t{r}")
    (out / "ranking.tsv").write_text("\n".join(lines) + "\n")

    lines = ["feature_a\tfeature_b\tcardinality\tmi\tscore\tgain\tredundancy\tfeature_mi"]
    for p in res.pairs:
        lines.append(f"{p.a}\t{p.b}\t{p.cardinality}\t{_f(p.mi)}\t{_f(p.score)}\t{_f(p.gain)}\t{_f(p.redundancy)}\t{_f(p.feature_mi)}")
    (out / "pairs.tsv").write_text("\n".join(lines) + "\n")

    lines = ["step\tfeature\tscore\tselected"]
    for i, (name, score, sel) in enumerate(res.selection, start=1):
        lines.append(f"{i}\t{name}\t{_f(score)}\t{str(sel).lower()}")
    (out / "selection.tsv").write_text("\n".join(lines) + "\n")

    sizes = dict(vocab_sizes or {})
    records = []
    for r, s in enumerate(res.features, start=1):
        rec = {"name": s.name, "role": s.role, "cardinality": s.cardinality, "cardinality_method": "exact",
               "coverage": round(s.coverage, 12), "vocab_size": int(sizes.get(s.name, s.cardinality + 2)),
               "vocab_size_source": "vocab" if s.name in sizes else "cardinality+2",
               "mi": round(s.mi, 12), "score": round(s.score, 12), "rank": r,
               "noise_corrected": res.noise_corrected, "selected": bool(selected.get(s.name, False))}
        if s.splits is not None:
            rec["bin_splits"] = s.splits
        records.append(rec)
        bucket = bucket_column(s.name)
        if s.role == "dense" and bucket in sizes:  # the vocab stage's bucket ids of it (features.vocab.numeric_buckets)
            records.append({**rec, "name": bucket, "role": "categorical", "bucket_of": s.name,
                            "cardinality": int(sizes[bucket]) - 2, "cardinality_method": "buckets",
                            "vocab_size": int(sizes[bucket]), "vocab_size_source": "vocab"})
            records[-1].pop("bin_splits", None)
    spec = {"label": res.label, "classes": res.classes, "rows": res.rows, "heuristic": res.heuristic,
            "features": records}
    (out / "feature_spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    plot_top_features(out / "top_features.png", res, cfg.plot_top)


def plot_top_features(path: Path, res: RankResult, top: int) -> None:
    """Horizontal bar chart of the top features' scores, coloured by role."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = res.features[:top][::-1]
    colours = {"categorical": "#4c72b0", "dense": "#dd8452", "multi_valued": "#55a868"}
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(feats) + 1.2))
    ax.barh([f"{s.name} ({s.cardinality:,})" for s in feats], [s.score for s in feats],
            color=[colours.get(s.role, "grey") for s in feats])
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{res.heuristic} score (nats)")
    ax.set_title(f"Top {len(feats)} features for '{res.label}' ({res.rows:,} rows)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), loc="lower right", fontsize=8)
    fig.tight_layout()
    # a fixed creation date keeps the PNG bytes the same from run to run
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)

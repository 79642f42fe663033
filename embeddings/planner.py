"""The memory-budget planner: feature spec x budget -> `EmbeddingPlan` (rows, dim, method per table).

Each embedding feature (role `categorical` / `multi_valued` / an id role) gets a ladder of options
from the methods allowed in `cfg.methods`: dense at `default_dim` (or DSL-sparse at
`cfg.dsl.density` when DSL is on), fp16, int8, int4, mixed_dim at dim/2, dim/4, ..., hashing
and qr at 2x, 4x, ... fewer rows (each of these three also served int8 / int4 when those methods
are allowed), and drop. Each option has bytes (the method's own
`table_bytes`) and a *kept quality* in [0, 1] (a documented heuristic, see `_quality`). The
planner picks one option per selected feature to maximise the plan's utility, the sum of kept
quality x feature weight, within the budget (`_choose`: a multiple-choice knapsack solved by
dynamic programming), where the weight grows with the OutRank score (`_weight`). So
low-score features lose dimension, precision or rows first and are dropped last-resort;
high-score features keep their tables. Features the rank stage did not select are dropped.

Budget: `cfg.budget_bytes`, or `cfg.compression_ratio` against all candidate features dense
fp32 at `default_dim`, or none (every selected feature dense). A budget below the smallest
representable plan (one table left at its cheapest option, when `drop` is allowed; otherwise every
table at its cheapest) raises `BudgetError` naming that minimum.

Example:
    >>> from embeddings.config import EmbeddingsConfig
    >>> spec = [{"name": "C1", "role": "categorical", "vocab_size": 1000, "score": 0.9, "selected": True},
    ...         {"name": "C2", "role": "categorical", "vocab_size": 100000, "score": 0.01, "selected": True}]
    >>> plan = plan_embeddings(spec, EmbeddingsConfig(compression_ratio=10))
    >>> plan.total_bytes <= plan.budget_bytes, plan.table_for("C1").method
    (True, 'int8')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from embeddings.compression import get_method, known_methods
from embeddings.config import EmbeddingsConfig
from embeddings.dsl.rows import row_budget
from embeddings.errors import BudgetError, FeatureSpecError, UnknownMethodError
from embeddings.spec import EmbeddingPlan, TableSpec

NOT_EMBEDDED_ROLES = {"dense", "numeric", "label", "timestamp", "session_id"}
MIN_ROWS = 2  # the vocab's reserved ids 0 (missing) and 1 (unknown)


@dataclass(frozen=True)
class Option:
    """One way to store a feature's table: method, params, dim, bytes, kept quality in [0, 1]."""

    method: str
    params: tuple[tuple[str, Any], ...]
    dim: int
    bytes: int
    quality: float
    rows: int
    dsl_density: float | None = None

    def describe(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.method}({p})" if p else self.method


@dataclass
class Feature:
    name: str
    rows: int
    score: float
    selected: bool
    role: str


# -- feature spec ----------------------------------------------------------------------------

def load_feature_spec(source: list[dict] | str | Path) -> list[Feature]:
    """Embedding features of a feature spec (list of records, or feature_spec.json / its folder).

    Example:
        >>> load_feature_spec([{"name": "C1", "role": "categorical", "vocab_size": 10, "score": 0.5, "selected": True},
        ...                    {"name": "I1", "role": "dense", "score": 0.1}])[0].rows
        10
    """
    where = "feature spec"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / "feature_spec.json"
        where = str(path)
        if not path.exists():
            raise FeatureSpecError(f"{path}: feature spec not found; run the rank stage or pass --spec with the right path")
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise FeatureSpecError(f"{path}: line {err.lineno}: not valid JSON ({err.msg}); fix or regenerate the file") from None
    else:
        records = source
    if isinstance(records, dict):
        records = records.get("features", records.get("records"))
    if not isinstance(records, list) or not records:
        raise FeatureSpecError(f"{where}: expected a non-empty list of feature records; regenerate it with the rank stage")
    out: list[Feature] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or "name" not in r:
            raise FeatureSpecError(f"{where}: record {i}: field 'name' is missing; every record needs name, role, vocab_size, score")
        name = str(r["name"])
        role = str(r.get("role", "categorical"))
        if role in NOT_EMBEDDED_ROLES:
            continue
        rows = r.get("vocab_size")
        if rows is None and r.get("cardinality") is not None:
            rows = int(r["cardinality"]) + MIN_ROWS
        if rows is None:
            raise FeatureSpecError(f"{where}: feature '{name}': field 'vocab_size' is missing (and no 'cardinality'); "
                                   "run the rank stage with the vocab stage's sizes")
        try:
            rows = int(rows)
        except (TypeError, ValueError):
            raise FeatureSpecError(f"{where}: feature '{name}': field 'vocab_size'={rows!r} is not an integer; fix the spec") from None
        if rows < 1:
            raise FeatureSpecError(f"{where}: feature '{name}': field 'vocab_size'={rows} must be >= 1; fix the spec")
        score = r.get("score")
        try:
            score = 0.0 if score is None else float(score)
        except (TypeError, ValueError):
            raise FeatureSpecError(f"{where}: feature '{name}': field 'score'={score!r} is not a number; fix the spec") from None
        if math.isnan(score) or math.isinf(score):
            raise FeatureSpecError(f"{where}: feature '{name}': field 'score' is {score}; re-run the rank stage")
        out.append(Feature(name, max(rows, MIN_ROWS), score, bool(r.get("selected", True)), role))
    if not out:
        raise FeatureSpecError(f"{where}: no categorical features to embed (roles seen: "
                               f"{sorted({str(r.get('role')) for r in records if isinstance(r, Mapping)})})")
    names = [f.name for f in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FeatureSpecError(f"{where}: feature(s) {dup} appear twice; keep one record per feature")
    return out


# -- options -----------------------------------------------------------------------------------

PRECISION_QUALITY = {"fp16": 0.9995, "int8": 0.998, "int4": 0.99}


def _quality(method: str, rows: int, dim: int, default_dim: int, stored_rows: int, density: float | None,
             serving: str = "fp32") -> float:
    """Kept quality of an option (heuristic, monotone in memory; 1 = dense at default_dim).

    Precision costs little (fp16 0.9995, int8 0.998, int4 0.99: row-wise int4 served CTR tables at
    5.3x with no measurable AUC loss in benchmarks/compression_tradeoff.py); it multiplies with the
    other costs when hashing / qr / mixed_dim tables are served quantized. A smaller stored dim
    costs (d/D)^0.1; fewer rows cost (stored_rows/rows)^0.5 for hashing and ^0.6 for qr. Rows are
    dearer than dims because sharing rows merges ids, which no later layer can undo, while a
    smaller dim keeps every id distinct: on MovieLens-100K (time split, dim 16) every table at dim
    4 served int4 lost no AUC at 10x less memory, where hashing the user and item ids lost 0.05;
    on the generated CTR logs both kinds of plan beat dense. Of the settings tried in
    benchmarks/compression_tradeoff.py (log-shaped row costs, exponents 0.5 and 0.8, linear and
    squared weights), these gave the planner (all methods) its best AUC at 10x, 30x and 100x on both.
    A DSL option (dense rows trained sparse at the user's density, replacing dense when DSL is on)
    counts as full quality: the user chose the density, and Wang et al. report little loss at
    80% sparsity."""
    if method == "drop":
        return 0.0
    q = PRECISION_QUALITY.get(method, 1.0) * PRECISION_QUALITY.get(serving, 1.0)
    if method == "mixed_dim":
        q *= (dim / default_dim) ** 0.1
    if method in ("hashing", "qr") and stored_rows < rows:
        q *= (stored_rows / rows) ** (0.5 if method == "hashing" else 0.6)
    return q


def _dsl_bytes(rows: int, dim: int, density: float, params: dict | None = None) -> int:
    """Bytes of a DSL-trained table exported pruned (the `pruned` method's count when registered;
    with `rows_kept`, row mode, the kept rows and the sentinel)."""
    if "pruned" in known_methods():  # its upper bound before training: every (kept) row, plus the remap
        return get_method("pruned").table_bytes(rows, dim, dict(params or {}))
    # fallback estimate: active fp32 values + a one-bit mask per weight
    return math.ceil(rows * dim * density) * 4 + math.ceil(rows * dim / 8)


def feature_options(f: Feature, cfg: EmbeddingsConfig) -> list[Option]:
    """Every way `f` may be stored under `cfg.methods`, most bytes first (ties: best quality first)."""
    D = cfg.default_dim
    rows = f.rows
    opts: list[Option] = []
    methods = cfg.methods

    # hashing / qr / mixed_dim tables may also be served quantized, when those methods are allowed
    servings = ["fp32"] + [p for p in ("int8", "int4") if p in methods and not (p == "int4" and D % 4)]

    def add(method: str, params: dict, dim: int, stored_rows: int, density: float | None = None) -> None:
        for serving in (servings if method in ("hashing", "qr", "mixed_dim") else ["fp32"]):
            p = dict(params, serving=serving) if serving != "fp32" else params
            if density is not None:
                b = _dsl_bytes(rows, dim, density, p)
            else:  # the table's dim is D for every method (mixed_dim projects its stored dim up to D)
                b = get_method(method).table_bytes(rows, D, p)
            q = _quality(method, rows, dim, D, stored_rows, density, serving)
            opts.append(Option(method, tuple(sorted(p.items())), dim, b, q, rows, density))

    capped = cfg.max_rows is not None and rows > cfg.max_rows
    if not capped:
        if "dense" in methods:
            if cfg.dsl.enabled and cfg.dsl.density < 1.0:
                # row mode: the physical table holds only the budget's rows (params.rows_kept)
                row = cfg.dsl.mode == "row" and "pruned" in known_methods()
                pruned = "pruned" in known_methods()
                params = {"rows_kept": row_budget(cfg.dsl.density, rows)} if row else \
                    {"max_error": cfg.dsl.export_error} if pruned and cfg.dsl.export_error is not None else {}
                add("pruned" if pruned else "dense", params, D, rows, cfg.dsl.density)
            else:
                add("dense", {}, D, rows)
        for m in ("fp16", "int8", "int4"):
            if m in methods and not (m == "int4" and D % 4):
                add(m, {}, D, rows)
        if "mixed_dim" in methods:
            d = D // 2
            while d >= 4 and d % 4 == 0:  # FBGEMM's fused kernels need dims divisible by 4
                add("mixed_dim", {"stored_dim": d}, d, rows)
                d //= 2
    if "hashing" in methods:
        buckets = min(rows // 2, cfg.max_rows or rows) if not capped else cfg.max_rows
        while buckets >= MIN_ROWS:
            add("hashing", {"buckets": int(buckets)}, D, int(buckets))
            buckets //= 2
    if "qr" in methods and rows >= 16:
        m = max(2, math.ceil(math.sqrt(rows)))
        ms = []
        mm = rows // 2
        while mm > m:
            ms.append(mm)
            mm //= 2
        ms.append(m)
        for mm in ms:
            stored = math.ceil(rows / mm) + mm
            if cfg.max_rows is None or max(mm, math.ceil(rows / mm)) <= cfg.max_rows:
                # the product of pooled rows is exact only for one-id bags; multi-valued bags sum
                add("qr", {"m": int(mm), **({"op": "add"} if f.role == "multi_valued" else {})}, D, stored)
    if "drop" in methods:
        opts.append(Option("drop", (), D, 0, 0.0, rows))
    if not opts:
        raise UnknownMethodError(f"embeddings.methods {methods}: no method can store feature '{f.name}' "
                                 f"({rows} rows{', over max_rows' if capped else ''}); allow hashing or dense")
    # keep the Pareto front: drop options that cost more without keeping more quality
    opts.sort(key=lambda o: (-o.bytes, -o.quality))
    front: list[Option] = []
    for o in sorted(opts, key=lambda o: (o.bytes, -o.quality)):
        if not front or o.quality > front[-1].quality:
            front.append(o)
    return sorted(front, key=lambda o: -o.bytes)


def _weight(f: Feature, max_score: float) -> float:
    """Utility weight of a feature: grows with the square of its OutRank score relative to the best
    feature's, never 0 (so ties break by bytes).

    Squared because low-score features are often partial proxies of high-score ones (a zip code
    of the user id), so their own score overstates what the model loses without them: with a
    linear weight the planner hashed MovieLens item ids to 92 rows at 30x to keep the zip table
    at dim 4 (AUC 0.648); squared, it keeps 185 item rows (0.668).
    """
    rel = f.score / max_score if max_score > 0 else 1.0
    return 0.01 + max(rel, 0.0) ** 2


# -- the plan ----------------------------------------------------------------------------------

def dense_reference_bytes(features: list[Feature], cfg: EmbeddingsConfig) -> int:
    """All candidate features dense fp32 at `default_dim`: the base of `compression_ratio`."""
    return sum(f.rows * cfg.default_dim * 4 for f in features)


def plan_embeddings(feature_spec: list[dict] | str | Path, cfg: EmbeddingsConfig) -> EmbeddingPlan:
    """An EmbeddingPlan fitting `cfg`'s budget, favouring high-score features (see module doc).

    Example:
        >>> from embeddings.config import EmbeddingsConfig
        >>> spec = [{"name": "a", "role": "categorical", "vocab_size": 50, "score": 1.0, "selected": True}]
        >>> [t.method for t in plan_embeddings(spec, EmbeddingsConfig()).tables]
        ['dense']
    """
    for m in cfg.methods:
        get_method(m)  # unknown names rejected before planning
    features = load_feature_spec(feature_spec)
    reference = dense_reference_bytes(features, cfg)
    if cfg.budget_bytes is not None:
        budget: int | None = int(cfg.budget_bytes)
    elif cfg.compression_ratio is not None:
        budget = int(reference / cfg.compression_ratio)
    else:
        budget = None
    notes = [f"reference: all {len(features)} candidate features dense fp32 at dim {cfg.default_dim} = {reference:,} bytes"]
    dropped = [f.name for f in features if not f.selected]
    if dropped:
        notes.append(f"not selected by the rank stage, dropped: {', '.join(dropped)}")
    kept = [f for f in features if f.selected]
    if not kept:
        raise FeatureSpecError("feature spec: no feature is selected; re-run the rank stage or mark features selected")
    options = {f.name: feature_options(f, cfg) for f in kept}
    max_score = max((f.score for f in kept), default=0.0)
    weight = {f.name: _weight(f, max_score) for f in kept}
    level = {f.name: 0 for f in kept}
    if budget is not None:
        minimum = _minimum_bytes(kept, options)
        if budget < minimum:
            raise BudgetError(f"embeddings budget {budget:,} bytes is below the minimum representable plan of "
                              f"{minimum:,} bytes for {len(kept)} features with methods {cfg.methods}; "
                              f"raise the budget to at least {minimum:,} bytes (or a ratio of at most "
                              f"{reference / minimum:.1f}x)")
        level = _choose(options, weight, budget)

    def cur(name: str) -> Option:
        return options[name][level[name]]

    tables = []
    for f in kept:
        o = cur(f.name)
        if o.method == "drop":
            dropped.append(f.name)
            continue
        spec = TableSpec(name=f"t_{f.name}", features=[f.name], rows=f.rows, dim=cfg.default_dim, method=o.method,
                         params=dict(o.params), dsl_density=o.dsl_density, score=f.score, bytes=o.bytes)
        tables.append(spec)
    tables.sort(key=lambda t: -(t.score or 0.0))
    _share_row_budget(tables)
    if budget is not None:
        notes.append(f"budget {budget:,} bytes; plan uses {sum(t.bytes for t in tables):,} bytes")
    return EmbeddingPlan(tables=tables, budget_bytes=budget, dropped_features=dropped, notes=notes)


def share_rows(rows: list[int], total: int) -> list[int]:
    """Row budgets of row-mode DSL tables under one global budget of `total` rows: small tables (few,
    frequent values) stay whole, found by water-filling (every table min(rows, c) with the largest c
    that fits), and the large ones (rows > c) share what is left at one common density, in proportion
    to their rows. An equal share instead gave ml-100k's 1481 items as many rows as its 345 zip
    prefixes, and cost 0.007 validation AUC at 80% sparsity (0.6904 vs 0.6972, 4 seeds).

    Example:
        >>> share_rows([3, 10, 1000, 5000], 1203)
        [3, 10, 198, 992]
    """
    total = max(len(rows), min(total, sum(rows)))
    lo, hi = 1, max(rows)
    while lo < hi:  # the largest cap c with sum(min(r, c)) <= total
        mid = (lo + hi + 1) // 2
        if sum(min(r, mid) for r in rows) <= total:
            lo = mid
        else:
            hi = mid - 1
    large = [i for i, r in enumerate(rows) if r > lo]
    kept = [r for r in rows]
    left = total - sum(r for r in rows if r <= lo)
    span = sum(rows[i] for i in large)
    shares = {i: left * rows[i] / span for i in large}
    for i in large:
        kept[i] = max(1, min(rows[i], int(shares[i])))
    spare = total - sum(kept)  # the rounding remainder: largest fractions first, then in order
    while spare < 0:  # tables lifted to their one row overshot: take it back from the largest share
        i = max((i for i in large if kept[i] > 1), key=lambda i: kept[i])
        kept[i] -= 1
        spare += 1
    for i in sorted(large, key=lambda i: (-(shares[i] - int(shares[i])), i)):
        if spare <= 0:
            break
        if kept[i] < rows[i]:
            kept[i] += 1
            spare -= 1
    return kept


def _share_row_budget(tables: list[TableSpec]) -> None:
    """Row mode: the tables' `rows_kept` (density x rows each, as first planned) pooled into one global
    row budget and shared by `share_rows` (a per-table share would keep 1 of a 3-value feature's rows at
    density 0.2: on the generated CTR logs that lost 0.12 AUC). Bytes follow the new row counts."""
    rowed = [t for t in tables if t.method == "pruned" and t.params.get("rows_kept") is not None]
    if not rowed:
        return
    kept = share_rows([t.rows for t in rowed], sum(int(t.params["rows_kept"]) for t in rowed))
    method = get_method("pruned")
    for t, k in zip(rowed, kept):
        t.params = {**t.params, "rows_kept": int(k)}
        t.bytes = method.spec_bytes(t)


def _choose(options: dict[str, list[Option]], weight: dict[str, float], budget: int,
            units: int | None = None) -> dict[str, int]:
    """Option index per feature maximising the plan's utility, sum of weight x kept quality, within
    `budget` bytes.

    A multiple-choice knapsack solved by dynamic programming over the budget cut into `units`
    equal parts (each option's bytes rounded up to whole parts, so the plan always fits),
    then the bytes the rounding left are filled by the upgrades with the most utility per extra
    byte. Unlike stepping each table down its ladder one option at a time, it weighs every option
    of every table at once: a valuable table keeps a big option while cheap ones give way.
    """
    names = sorted(options)
    # rounding up costs each feature under one part: 16 parts per feature keep that below 1/16 of
    # the budget in all (the fill below recovers part of it); 16k parts bound time and memory
    units = units or min(1 << 14, max(1 << 12, 16 * len(names)))
    unit = budget / units
    dp = np.zeros(units + 1)  # best utility of the features so far within c units
    costs, choices = {}, []
    for n in names:
        costs[n] = [min(units + 1, math.ceil(o.bytes / unit - 1e-9)) for o in options[n]]
        cand = np.full((len(options[n]), units + 1), -np.inf)
        for i, (c, o) in enumerate(zip(costs[n], options[n])):
            if c <= units:
                cand[i, c:] = dp[:units + 1 - c] + weight[n] * o.quality
        choices.append(cand.argmax(0).astype(np.int16))
        dp = cand.max(0)
    if np.isinf(dp[units]):  # rounding priced out the cheapest plan, which fits in bytes: start there
        best = {n: len(options[n]) - 1 for n in names}
    else:
        best, c = {}, units
        for n, choice in zip(reversed(names), reversed(choices)):
            best[n] = int(choice[c])
            c -= costs[n][best[n]]
    size = sum(options[n][best[n]].bytes for n in names)
    # fill what the rounding left: the upgrade with the most utility per extra byte, while any fits
    left = budget - size
    while True:
        move, gain = None, 0.0
        for n in names:
            cur = options[n][best[n]]
            for i in range(best[n]):
                o = options[n][i]
                extra = o.bytes - cur.bytes
                if 0 < extra <= left:
                    g = weight[n] * (o.quality - cur.quality) / extra
                    if g > gain:
                        move, gain = (n, i), g
        if move is None:
            break
        n, i = move
        left -= options[n][i].bytes - options[n][best[n]].bytes
        best[n] = i
    # never every table dropped: a budget passes `_minimum_bytes` only when some table fits alone, and
    # that table's utility (weight > 0, quality > 0) beats dropping it
    return best


def _minimum_bytes(kept: list[Feature], options: dict[str, list[Option]]) -> int:
    """Smallest representable plan: the cheapest single table when drop is allowed, otherwise every
    feature at its cheapest option."""
    cheapest = {f.name: options[f.name][-1] for f in kept}
    if all(o.method == "drop" for o in cheapest.values()):
        non_drop = [(opts[-2].bytes if len(opts) > 1 else 0) for opts in options.values()]
        return min(non_drop)
    return sum(o.bytes for o in cheapest.values())


# -- presentation and the stage ----------------------------------------------------------------

def plan_rows(plan: EmbeddingPlan) -> list[dict[str, Any]]:
    """One display row per table and per dropped feature."""
    rows = []
    for t in plan.tables:
        p = ", ".join(f"{k}={v}" for k, v in sorted(t.params.items()))
        rows.append({"table": t.name, "features": ",".join(t.features), "score": t.score, "rows": t.rows, "dim": t.dim,
                     "method": t.method + (f"({p})" if p else ""), "dsl_density": t.dsl_density,
                     "fp32_bytes": t.fp32_bytes, "bytes": t.bytes if t.bytes is not None else t.fp32_bytes})
    for f in plan.dropped_features:
        rows.append({"table": "-", "features": f, "score": None, "rows": 0, "dim": 0, "method": "drop",
                     "dsl_density": None, "fp32_bytes": 0, "bytes": 0})
    return rows


def plan_markdown(plan: EmbeddingPlan) -> str:
    """The plan as a markdown table with totals (written to plan.md)."""
    lines = ["# Embedding plan", "",
             f"Budget: {plan.budget_bytes:,} bytes" if plan.budget_bytes is not None else "Budget: none (dense)",
             f"Total: {plan.total_bytes:,} bytes (fp32 equivalent of the kept tables {plan.fp32_bytes:,})", "",
             "| table | features | score | rows | dim | method | DSL density | fp32 bytes | bytes |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in plan_rows(plan):
        score = "" if r["score"] is None else f"{r['score']:.4g}"
        dsl = "" if r["dsl_density"] is None else f"{r['dsl_density']:.2f}"
        lines.append(f"| {r['table']} | {r['features']} | {score} | {r['rows']:,} | {r['dim']} | {r['method']} | {dsl} | "
                     f"{r['fp32_bytes']:,} | {r['bytes']:,} |")
    lines += [""] + [f"- {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


def plan_table(plan: EmbeddingPlan):
    """The plan as a rich Table (for the CLI)."""
    from rich.table import Table

    table = Table(title=f"embedding plan: {plan.total_bytes:,} bytes"
                  + (f" of {plan.budget_bytes:,} budget" if plan.budget_bytes is not None else ""))
    for col, just in [("table", "left"), ("features", "left"), ("score", "right"), ("rows", "right"), ("dim", "right"),
                      ("method", "left"), ("DSL", "right"), ("fp32 bytes", "right"), ("bytes", "right")]:
        table.add_column(col, justify=just)
    for r in plan_rows(plan):
        table.add_row(r["table"], r["features"], "" if r["score"] is None else f"{r['score']:.4g}", f"{r['rows']:,}",
                      str(r["dim"]), r["method"], "" if r["dsl_density"] is None else f"{r['dsl_density']:.2f}",
                      f"{r['fp32_bytes']:,}", f"{r['bytes']:,}")
    return table


def plan_stage(inputs: Mapping[str, Path], out: Path, cfg: EmbeddingsConfig) -> dict[str, Any]:
    """Stage `plan`: read `inputs["rank"]/feature_spec.json`, write embedding_plan.json and plan.md.

    Example::

        summary = plan_stage({"rank": Path("runs/r1/rank")}, Path("/tmp/plan"), EmbeddingsConfig())
    """
    plan = plan_embeddings(Path(inputs["rank"]), cfg)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "embedding_plan.json")
    (out / "plan.md").write_text(plan_markdown(plan))
    methods: dict[str, int] = {}
    for t in plan.tables:
        methods[t.method] = methods.get(t.method, 0) + 1
    return {"rows_in": len(plan.tables) + len(plan.dropped_features), "rows_out": len(plan.tables),
            "tables": len(plan.tables), "dropped": len(plan.dropped_features), "total_bytes": plan.total_bytes,
            "budget_bytes": plan.budget_bytes, "methods": methods}

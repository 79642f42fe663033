"""The rank stage: OutRank-style feature ranking on Spark (counts on Spark, arithmetic in mi.py).

Passes over the data: a profile (label classes, row count, malformed rows, which raw columns are
numeric), approxQuantile for dense columns, then ONE explode of every feature into
(feature, value, label) rows and a group-by that yields every feature's count statistics at once
(values are counted under a 64-bit key: a dense column's bin index, else the value's hash,
`value_key_sql`).
A second pass counts every candidate pair at once (pair relevance and redundancy): ONE explode of
all pair keys and one group-by, like the feature pass. Its members' counts are the feature pass's,
reused; only when the pair table would be larger than the data are the pairs counted on a
seeded row sample (`pair_sample_fraction`: at most `pair_sample_rows` rows, and no more (group,
row) cells than the feature pass counts; OutRank subsamples too), with their members counted on
the same sample in the same aggregation so that gain and redundancy compare like with like. The
prepared value keys are cached for an exact pair pass; nothing is cached otherwise: a cache costs
more to build than one more read of the input.

Example::

    summary = rank({"raw": Path("train.tsv")}, Path("out"), dataset, RankConfig(), spark)
    summary["top"][:3]
    # -> ['C1', 'C9', 'C2']
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from features.config import DatasetConfig, RankConfig
from features.count_tables import group_count_stats
from features.discretize import bin_index_sql, quantile_splits
from features.errors import DataError
from features.estimators import Estimator, get_estimator
from features.mi import adjusted_mutual_information, expected_mutual_information, select_3mr
from features.rank_outputs import write_outputs
from features.rank_result import FeatureScore, PairScore, RankResult
from features.rank_source import CORRUPT, NUMBER_RE, RankSource, q, read_ingest, read_raw, sql_str

MAX_LABEL_CLASSES = 50
NULL_TOKEN = "\u0000missing"   # stands for a missing value inside a hashed pair


class _Clock:
    """Wall time of each named pass (reported in the summary; handy for benchmarks)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


def open_source(spark: Any, inputs: Mapping[str, Path], dataset: DatasetConfig,
                exclude: list[str] | None = None) -> RankSource:
    """The ingest output when `inputs` has 'ingest', else the raw file under 'raw'."""
    if "ingest" in inputs:
        src = read_ingest(spark, Path(inputs["ingest"]), dataset)
        drop = set(exclude or [])
        src.categorical = [c for c in src.categorical if c not in drop]
        src.dense = [c for c in src.dense if c not in drop]
        src.multi_valued = [c for c in src.multi_valued if c not in drop]
        return src
    if "raw" not in inputs:
        raise DataError("rank needs an 'ingest' stage folder or a 'raw' file as input.")
    r = dataset.roles
    if r.label is None:
        raise DataError(f"dataset '{dataset.name}': roles.label is not set; ranking needs a label column.")
    if not dataset.header:
        raise DataError(f"{inputs['raw']}: rank reads raw files with a header line; run ingest first for header-less files.")
    given = bool(r.categorical or r.dense or r.multi_valued)
    return read_raw(spark, Path(inputs["raw"]), label=r.label, fmt=dataset.format, exclude=exclude,
                    categorical=r.categorical if given else None, dense=r.dense if given else None,
                    multi_valued=r.multi_valued if given else None)


def _profile(src: RankSource) -> tuple[Any, list[str], dict[str, int]]:
    """One pass: label classes and counts, malformed rows, numeric raw columns. Returns the clean df."""
    from pyspark.sql import functions as F

    df = src.df
    feats = [*src.categorical, *src.dense, *src.multi_valued]
    aggs = [F.expr("count(1)").alias("_rows")]
    if src.raw_text:
        aggs.append(F.expr(f"count({q(CORRUPT)})").alias("_bad"))
    if src.raw_text and not src.header_rows:  # read by the CSV reader
        # every column is read, so the CSV parser (which prunes unread columns) judges a row
        # malformed exactly as the counting pass will
        aggs += [F.expr(f"count({q(c)})").alias(f"p:{c}") for c in feats]
    if src.infer_dense:  # the candidates looked numeric in the first rows; check every well-formed row
        ok = f"{q(CORRUPT)} IS NULL"
        aggs += [F.expr(f"count(CASE WHEN {ok} THEN {q(c)} END)").alias(f"n:{c}") for c in src.dense]
        aggs += [F.expr(f"count(CASE WHEN {ok} AND {q(c)} RLIKE {sql_str(NUMBER_RE)} THEN 1 END)").alias(f"d:{c}")
                 for c in src.dense]
    rows = [r.asDict() for r in df.groupBy(F.expr(f"CAST({q(src.label)} AS STRING)").alias("_label")).agg(*aggs)
            .limit(MAX_LABEL_CLASSES + 2 + src.header_rows).collect()]
    read = sum(r["_rows"] for r in rows) - src.header_rows
    bad = sum(r.get("_bad", 0) for r in rows) - src.header_rows
    if read == 0:
        raise DataError(f"{src.path}: has no data rows (header only?); give a file with at least two rows.")
    counts = {r["_label"]: r["_rows"] - r.get("_bad", 0) for r in rows}
    no_label = counts.pop(None, 0)
    classes = sorted(k for k, v in counts.items() if v > 0)
    if len(classes) > MAX_LABEL_CLASSES:
        raise DataError(f"{src.path}: label '{src.label}' has more than {MAX_LABEL_CLASSES} distinct values; "
                        "ranking needs a class label (e.g. clicked 0/1): pick another --label or bucket it.")
    if len(classes) < 2:
        only = f"'{classes[0]}' in all {counts[classes[0]]:,} rows" if classes else "no non-missing value"
        raise DataError(f"{src.path}: label '{src.label}' has a single class ({only}); "
                        "ranking needs at least two classes: check --label or the file.")
    if src.infer_dense:
        n = {c: sum(r[f"n:{c}"] for r in rows) for c in src.dense}
        d = {c: sum(r[f"d:{c}"] for r in rows) for c in src.dense}
        dense = [c for c in src.dense if n[c] > 0 and n[c] == d[c]]
        src.categorical = [c for c in feats if c not in dense]
        src.dense = dense
    if src.raw_text:
        df = df.where(f"{q(CORRUPT)} IS NULL").drop(CORRUPT)
    df = df.where(f"{q(src.label)} IS NOT NULL")
    cast = "try_cast({} AS DOUBLE)" if src.raw_text else "CAST({} AS DOUBLE)"
    if src.dense:
        dense = set(src.dense)
        df = df.selectExpr(*[f"{cast.format(q(c))} AS {q(c)}" if c in dense else q(c) for c in df.columns])
    info = {"rows_read": int(read), "rows_malformed": int(bad), "rows_without_label": int(no_label)}
    return df, classes, {**info, **{f"class:{c}": int(counts[c]) for c in classes}}


def background_sql(class_counts: np.ndarray, seed: int, copies: int) -> list[str]:
    """Spark SQL columns `_b0..`: random label copies (class indices) drawn from the label's class shares.

    Example:
        >>> background_sql(np.array([3, 1]), seed=0, copies=1)
        ['CAST(rand(0) >= 0.75D AS INT) AS _b0']
    """
    cum = np.cumsum(class_counts)[:-1] / np.sum(class_counts)
    return [" + ".join(f"CAST(rand({seed + p}) >= {float(t)!r}D AS INT)" for t in cum) + f" AS _b{p}"
            for p in range(copies)]


def _value_sql(src: RankSource, name: str, splits: dict[str, list[float]]) -> str:
    """Spark SQL: a dense column's bin index (`bin_index_sql`; already a 64-bit key), else the
    value as a string (then hashed to its key by `value_key_sql`)."""
    from pyspark.sql.types import ArrayType

    if name in splits:
        return bin_index_sql(q(name), splits[name])
    dtype = {f.name: f.dataType for f in src.df.schema.fields}.get(name)
    if isinstance(dtype, ArrayType):
        # a multi-valued field is ranked as the set of its values
        return f"array_join(array_sort(array_distinct({q(name)})), '|')"
    return f"CAST({q(name)} AS STRING)"


def score_features(spark: Any, src: RankSource, cfg: RankConfig) -> RankResult:
    """Rank every feature of `src` against its label; pairs and 3MR as `cfg` asks.

    Example::

        res = score_features(spark, read_raw(spark, Path("t.csv"), "y"), RankConfig())
        res.features[0].name
    """
    from pyspark import StorageLevel

    est = get_estimator(cfg.heuristic)
    clock = _Clock()
    df, classes, info = _profile(src)
    clock.lap("profile")
    feats = src.features
    if not feats:
        raise DataError(f"{src.path}: no feature columns besides the label '{src.label}'.")
    class_counts = np.array([info[f"class:{c}"] for c in classes], dtype=np.int64)
    N = int(class_counts.sum())
    splits = quantile_splits(spark, df, src.dense, cfg.bins)
    clock.lap("quantiles")
    copies = cfg.permutations if est.needs_background else 0
    label = f"CAST({q(src.label)} AS STRING)"
    y = "CASE " + " ".join(f"WHEN {label} = {sql_str(c)} THEN {k}" for k, c in enumerate(classes[1:], 1)) + " ELSE 0 END"
    bg = background_sql(class_counts, cfg.seed, copies)
    # each value as its 64-bit key (null = missing): what both passes count, and what the cache holds
    # (a dense bin index is its own key: no string is built or hashed for it)
    prepared = (df.selectExpr(f"{y} AS _y", *bg, *[f"{_value_sql(src, c, splits)} AS _s{i}" for i, c in enumerate(feats)])
                .selectExpr("_y", *[f"_b{p}" for p in range(copies)],
                            *[f"{f'_s{i}' if c in splits else value_key_sql(f'_s{i}')} AS _v{i}" for i, c in enumerate(feats)]))
    # whether the pair pass samples (no cache) or reads every row again (cache), judged from the
    # pairs of the top features alone (the candidates are known after the feature pass)
    fewest = min(cfg.pairs_top_k, len(feats))
    sampled = pair_sample_fraction(N, cfg, len(feats), fewest * (fewest - 1) // 2 + fewest) < 1.0
    if cfg.pairs_top_k > 0 and not sampled:  # an exact pair pass reads the prepared values again
        prepared = prepared.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        bcols = [f"_b{p}" for p in range(copies)]
        long_df = prepared.selectExpr("_y", *bcols, "inline(array(" + ", ".join(
            f"struct({i} AS g, _v{i} AS v)" for i in range(len(feats))) + "))")
        counts = group_count_stats(long_df, len(classes), copies, class_counts)
        clock.lap("features")
        role = {**{c: "categorical" for c in src.categorical}, **{c: "dense" for c in src.dense},
                **{c: "multi_valued" for c in src.multi_valued}}
        scores = []
        for i, name in enumerate(feats):
            gc = counts[i]
            scores.append(FeatureScore(name=name, role=role[name], cardinality=gc.cardinality,
                                       coverage=1.0 - gc.missing_rows / N, mi=gc.stats.mi(),
                                       score=est.score(gc.stats), counts=gc, splits=splits.get(name)))
        scores.sort(key=lambda s: (-s.score, s.name))
        clock.lap("scores")
        pairs, pair_rows = _pair_scores(prepared, feats, scores, cfg, est, len(classes), copies, class_counts, clock)
    finally:
        prepared.unpersist()
    selection = _selection(scores, pairs, cfg)
    clock.lap("selection")
    return RankResult(seconds=clock.laps, label=src.label, classes=classes, rows=N, heuristic=est.name, noise_corrected=est.noise_corrected,
                      features=scores, pairs=pairs, selection=selection, pair_rows=pair_rows, rows_read=info["rows_read"],
                      rows_malformed=info["rows_malformed"], rows_without_label=info["rows_without_label"])


def pair_candidates(scores: list[FeatureScore], cfg: RankConfig) -> list[str]:
    """Features that enter the pair search: the top `pairs_top_k` by score, plus every categorical
    feature with at most `pair_max_cardinality` values (XOR-like pairs hide there: each member
    alone scores ~0, so it would never reach the top by itself). Constant features never do."""
    if cfg.pairs_top_k == 0:
        return []
    top = [s.name for s in scores[:cfg.pairs_top_k] if s.cardinality > 1]
    low = [s.name for s in scores if s.role != "dense" and 1 < s.cardinality <= cfg.pair_max_cardinality]
    return sorted(set(top) | set(low), key=[s.name for s in scores].index)


def value_key_sql(v_sql: str) -> str:
    """Spark SQL: a value's 64-bit hash (null stays null), the key its rows are counted under.

    A fixed-width key makes the count group-by about a fifth cheaper than one on strings. Two
    values of one feature share a key with probability about n^2 / 2^65 (3e-8 at n = 10^6 values).

    Example:
        >>> value_key_sql("_v0")
        'CASE WHEN _v0 IS NULL THEN NULL ELSE xxhash64(_v0) END'
    """
    return f"CASE WHEN {v_sql} IS NULL THEN NULL ELSE xxhash64({v_sql}) END"


def pair_key_sql(a_key: str, b_key: str, buckets: int) -> str:
    """Spark SQL: the pair of two value keys (`value_key_sql`) hashed into `buckets` values (missing
    is a value of its own).

    Example:
        >>> pair_key_sql("_v0", "_v1", 8)
        "pmod(xxhash64(coalesce(_v0, xxhash64('\\x00missing')), coalesce(_v1, xxhash64('\\x00missing'))), 8L)"
    """
    null = f"xxhash64({sql_str(NULL_TOKEN)})"
    return f"pmod(xxhash64(coalesce({a_key}, {null}), coalesce({b_key}, {null})), {int(buckets)}L)"


def pair_sample_fraction(rows: int, cfg: RankConfig, features: int = 0, groups: int = 0) -> float:
    """Share of the rows the pair pass counts: 1 (exact) unless the pair table would be larger than
    the data, else a seeded sample of about S rows, S the smaller of `cfg.pair_sample_rows` and
    rows x `features` / `groups` (the pair pass then counts no more (group, row) cells than the
    feature pass counts (feature, row) cells; `groups` = pairs + their members, counted together),
    but never fewer than `cfg.pair_min_rows` rows. `pair_sample_rows` None: every row.

    Example:
        >>> pair_sample_fraction(4_000_000, RankConfig(pair_sample_rows=1_000_000))
        0.25
        >>> pair_sample_fraction(200_000, RankConfig(), features=40, groups=160)   # 50,000 rows
        0.25
        >>> pair_sample_fraction(200_000, RankConfig(pair_min_rows=100_000), features=40, groups=160)
        0.5
    """
    if cfg.pair_sample_rows is None:
        return 1.0
    target = cfg.pair_sample_rows
    if features > 0 and groups > features:
        target = min(target, max(cfg.pair_min_rows, -(-rows * features // groups)))
    return 1.0 if rows <= target else target / rows


def pair_long_df(prepared: Any, keys: Mapping[str, str], combos: list[tuple[str, str]], members: list[str],
                 buckets: int, copies: int) -> Any:
    """The (g, v, _y, _b*) rows of every pair at once: group j < len(combos) is pair combos[j] (its
    hashed key), group len(combos) + i is members[i] alone (its value key): ONE explode, so one
    group-by counts them all. `keys` maps a feature to its value-key column of `prepared`.

    Example::

        pair_long_df(prepared, {"a": "_v0", "b": "_v1"}, [("a", "b")], [], 1 << 20, 0).columns
        # -> ['_y', 'g', 'v']
    """
    structs = [f"struct({j} AS g, {pair_key_sql(keys[a], keys[b], buckets)} AS v)" for j, (a, b) in enumerate(combos)]
    structs += [f"struct({len(combos) + i} AS g, {keys[m]} AS v)" for i, m in enumerate(members)]
    return prepared.selectExpr("_y", *[f"_b{p}" for p in range(copies)], "inline(array(" + ", ".join(structs) + "))")


def _pair_scores(prepared: Any, feats: list[str], scores: list[FeatureScore], cfg: RankConfig, est: Estimator,
                 classes: int, copies: int, class_counts: np.ndarray, clock: "_Clock") -> tuple[list[PairScore], int]:
    """Every candidate pair's scores from one aggregation; returns (pairs by gain, rows counted)."""
    names = pair_candidates(scores, cfg)
    if len(names) < 2:
        return [], 0
    by_name = {s.name: s for s in scores}
    keys = {name: f"_v{feats.index(name)}" for name in feats}
    combos = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    frac = pair_sample_fraction(int(class_counts.sum()), cfg, len(feats), len(combos) + len(names))
    if frac < 1.0:  # a seeded row sample; its members are counted on the same rows, in the same pass
        rows = prepared.where(f"rand({int(cfg.seed) + 7919}) < {frac!r}D")
        counts = group_count_stats(pair_long_df(rows, keys, combos, names, cfg.pair_buckets, copies),
                                   classes, copies, None)
        member = {m: counts[len(combos) + i].stats for i, m in enumerate(names)}
        member_score = {m: est.score(st) for m, st in member.items()}
    else:  # every row: the members' counts are the feature pass's
        counts = group_count_stats(pair_long_df(prepared, keys, combos, [], cfg.pair_buckets, copies),
                                   classes, copies, class_counts)
        member = {m: by_name[m].counts.stats for m in names}
        member_score = {m: by_name[m].score for m in names}
    clock.lap("pair_counts")
    N = float(counts[0].stats.rows)
    out = []
    for j, (a, b) in enumerate(combos):
        gc = counts[j]
        sa, sb = member[a], member[b]
        score = est.score(gc.stats)
        fmi = (gc.stats.row_xlogx - sa.row_xlogx - sb.row_xlogx + N * np.log(N)) / N
        h_a = (N * np.log(N) - sa.row_xlogx) / N
        h_b = (N * np.log(N) - sb.row_xlogx) / N
        emi = expected_mutual_information(sa.value_counts, sa.multiplicity, sb.value_counts, sb.multiplicity)
        out.append(PairScore(a=a, b=b, cardinality=gc.cardinality, mi=gc.stats.mi(), score=score,
                             gain=score - member_score[a] - member_score[b],
                             redundancy=adjusted_mutual_information(fmi, emi, h_a, h_b), feature_mi=float(fmi)))
    out.sort(key=lambda p: (-p.gain, p.a, p.b))
    clock.lap("pair_scores")
    return out, int(N)


def _selection(scores: list[FeatureScore], pairs: list[PairScore], cfg: RankConfig) -> list[tuple[str, float, bool]]:
    names = [s.name for s in scores]
    idx = {n: i for i, n in enumerate(names)}
    red = np.zeros((len(names), len(names)))
    gain = np.zeros((len(names), len(names)))
    for p in pairs:
        i, j = idx[p.a], idx[p.b]
        red[i, j] = red[j, i] = p.redundancy
        gain[i, j] = gain[j, i] = p.gain
    return select_3mr(names, np.array([s.score for s in scores]), red, gain, cfg.relevance_weight,
                      cfg.redundancy_weight, cfg.pair_weight, cfg.select_k, cfg.min_score)


def rank(inputs: Mapping[str, Path], out: Path, dataset: DatasetConfig, cfg: RankConfig, spark: Any,
         vocab_sizes: Mapping[str, int] | None = None, exclude: list[str] | None = None) -> dict:
    """The rank stage: read `inputs['ingest']` (or `inputs['raw']`), write the ranking under `out`.

    Writes ranking.tsv, pairs.tsv, selection.tsv, feature_spec.json and top_features.png (see
    docs/stages.md). `vocab_sizes` (feature -> size from the vocab stage) sets each feature's
    vocab_size; without it, `inputs['vocab']/sizes.json` is used when given, else cardinality + 2.
    `exclude` names columns that are not features (e.g. a timestamp).

    Example::

        rank({"ingest": Path("runs/r/ingest")}, Path("runs/r/rank"), ds, RankConfig(), spark)
        # -> {'rows_in': 20000, 'rows_out': 20000, 'features': 39, ...}
    """
    if vocab_sizes is None and "vocab" in inputs:
        sizes = Path(inputs["vocab"]) / "sizes.json"
        if not sizes.exists():
            raise DataError(f"{sizes}: missing; the vocab stage writes it (re-run `sparserec features vocab`).")
        vocab_sizes = json.loads(sizes.read_text())
    t0 = time.perf_counter()
    src = open_source(spark, inputs, dataset, exclude)
    opened = round(time.perf_counter() - t0, 3)
    result = score_features(spark, src, cfg)
    result.seconds = {"open": opened, **result.seconds}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_outputs(out, result, cfg, vocab_sizes)
    result.seconds["outputs"] = round(time.perf_counter() - t0, 3)
    return {
        "rows_in": result.rows_read, "rows_out": result.rows, "rows_malformed": result.rows_malformed,
        "rows_without_label": result.rows_without_label, "features": len(result.features),
        "pairs": len(result.pairs), "pair_rows": result.pair_rows, "heuristic": result.heuristic,
        "selected": [n for n, _, sel in result.selection if sel],
        "top": [s.name for s in result.features[:10]], "seconds": result.seconds,
    }

"""The stage graph of a run: which stage function runs, on what, with which settings.

Only wiring lives here: every stage function belongs to its layer (features, embeddings,
pipelines) and takes `(inputs, out, settings...)`. Imports are lazy so `sparserec --help` is fast.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.pipeline import Stage, StageContext

if TYPE_CHECKING:  # annotations only: `sparserec --help` does not load the config models
    from jobs.config import RunConfig


def _raw(cfg: RunConfig) -> dict[str, Path]:
    d = {"raw": cfg.dataset.path}
    if cfg.dataset.items is not None:
        d["items"] = cfg.dataset.items.path
    d.update({f"table_{t.name}": t.path for t in cfg.dataset.tables})  # side tables: inputs of ingest
    return d


def _ingest(ctx: StageContext):
    from features.ingest import ingest

    return partial(ingest, dataset=ctx.cfg.dataset, cfg=ctx.cfg.features.ingest, spark=ctx.spark)


def _vocab(ctx: StageContext):
    from features.vocab import build_vocab

    return partial(build_vocab, dataset=ctx.cfg.dataset, cfg=ctx.cfg.features.vocab, spark=ctx.spark)


def _sessions(ctx: StageContext):
    from features.sessions import build_sessions

    return partial(build_sessions, dataset=ctx.cfg.dataset, cfg=ctx.cfg.features.sessions, spark=ctx.spark)


def _quality(ctx: StageContext):
    from features.quality import quality_report

    return partial(quality_report, dataset=ctx.cfg.dataset, cfg=ctx.cfg.features.quality, spark=ctx.spark)


def _rank(ctx: StageContext):
    from features.outrank import rank

    return partial(rank, dataset=ctx.cfg.dataset, cfg=ctx.cfg.features.rank, spark=ctx.spark,
                   exclude=list(ctx.options.get("exclude", [])) or None)  # `features rank --exclude COL`


def _aggregates(ctx: StageContext):
    from features.aggregates import aggregates

    return partial(aggregates, dataset=ctx.cfg.dataset, windows_days=ctx.cfg.store.windows_days, spark=ctx.spark)


def _store(ctx: StageContext):
    from features.store.repo import materialize, register

    def register_and_materialize(inputs, out):
        summary = register(inputs, out, dataset=ctx.cfg.dataset, cfg=ctx.cfg.store, spark=ctx.spark)
        done = materialize(out)  # the SQLite online store lives inside the stage folder
        return {**summary, "materialized_views": done["views"], "materialized_until": done["end"]}

    return register_and_materialize


def _plan(ctx: StageContext):
    from embeddings.planner import plan_stage

    return partial(plan_stage, cfg=ctx.cfg.embeddings)


def _train(ctx: StageContext):
    from pipelines.ctr.trainer import train_stage

    return partial(train_stage, cfg=ctx.cfg.training, emb_cfg=ctx.cfg.embeddings, seed=ctx.cfg.seed)


def _train_sessions(ctx: StageContext):
    from pipelines.sessions.train import train_stage

    return partial(train_stage, train=ctx.cfg.training, seed=ctx.cfg.seed, show_progress=True,
                   eval_positions=ctx.options.get("positions", 1))  # `sessions train --positions N`


def _report(ctx: StageContext):
    from pipelines.run_report import report_stage

    from jobs.runs import stale_stages

    return partial(report_stage, run_name=ctx.cfg.name, count_units={s.name: s.counts for s in GRAPH if s.counts != ("rows", "rows")},
                   stale=lambda: stale_stages(ctx.run_dir))


def _is(*kinds: str):
    return lambda cfg: cfg.dataset.kind in kinds


GRAPH: list[Stage] = [
    Stage("ingest", (), ("dataset", "features.ingest"), _ingest, raw_inputs=_raw,
          description="raw logs → typed Parquet + quarantine"),
    Stage("vocab", ("ingest",), ("dataset", "features.vocab"), _vocab, when=_is("ctr"),
          description="vocabularies, time split, encoded splits"),
    Stage("sessions", ("ingest",), ("dataset", "features.sessions"), _sessions, when=_is("sessions", "interactions"),
          description="ordered sessions, item metadata, time split"),
    Stage("quality", ("ingest",), ("dataset", "features.quality"), _quality, description="data-quality report"),
    Stage("rank", ("ingest", "vocab"), ("dataset", "features.rank"), _rank, when=_is("ctr"),
          description="OutRank feature ranking"),
    Stage("aggregates", ("ingest",), ("dataset", "store"), _aggregates,
          when=lambda c: c.store.enabled and c.dataset.kind == "ctr",
          description="per-user / per-item counts and CTRs over time windows (Spark)"),
    Stage("store", ("aggregates", "vocab", "rank"), ("dataset", "store"), _store,
          when=lambda c: c.store.enabled and c.dataset.kind == "ctr",
          description="Feast repo: register (apply) and materialize to SQLite"),
    Stage("plan", ("rank",), ("embeddings",), _plan, when=_is("ctr"), description="memory-budget embedding plan",
          counts=("features", "tables")),
    Stage("train", ("vocab", "plan"), ("training", "embeddings"), _train, when=_is("ctr"),
          description="Ray Train / TorchRec training and evaluation"),
    Stage("train", ("sessions",), ("training",), _train_sessions, when=_is("sessions", "interactions"),
          description="session models (M2TRec and baselines) and evaluation"),
    Stage("report", ("ingest", "vocab", "quality", "rank", "plan", "train"), (), _report, when=_is("ctr"),
          description="the run's report.md with plots"),
    Stage("report", ("ingest", "sessions", "quality", "train"), (), _report, when=_is("sessions", "interactions"),
          description="the run's report.md with plots"),
]


def graph_for(cfg: RunConfig) -> list[Stage]:
    """The stages of `GRAPH` that apply to this run's dataset kind and settings."""
    return [s for s in GRAPH if s.when(cfg)]


def stage_names() -> list[str]:
    """Every stage name of `GRAPH` once, in run order (the values of `run --from` / `--only`).

    Example:
        >>> stage_names()[:3]
        ['ingest', 'vocab', 'sessions']
    """
    return list(dict.fromkeys(s.name for s in GRAPH))


def count_units(stage: str) -> tuple[str, str]:
    """What `rows_in` / `rows_out` of `stage`'s manifest count, e.g. ('features', 'tables') for plan."""
    return next((s.counts for s in GRAPH if s.name == stage), ("rows", "rows"))

"""Runs a stage graph over a run folder: skipping unchanged stages, `--from` / `--only`, one summary.

Example:
    >>> outcomes = run_pipeline(cfg, Path("runs/sample-ctr"))          # doctest: +SKIP
    >>> [o.stage for o in outcomes]
    ['ingest', 'vocab', 'quality', 'rank', 'plan', 'train']
"""

from __future__ import annotations

import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from features.errors import UserError
from jobs.run_lock import run_lock
from jobs.runs import MANIFEST, Manifest, run_stage, stage_is_current
from jobs.stage_logs import StageLogs

if TYPE_CHECKING:  # annotations only: `sparserec --help` does not load the config models
    from jobs.config import RunConfig


LOGS = "logs"  # <run>/logs/<stage>.log: the engine output and, on a crash, the traceback of a stage


@dataclass(frozen=True)
class Stage:
    """One node of the graph: what it reads, which config sections it depends on, how to run it."""

    name: str
    needs: tuple[str, ...]
    sections: tuple[str, ...]
    run: Callable[["StageContext"], Callable[[Any, Path], dict]]
    raw_inputs: Callable[[RunConfig], dict[str, Path]] = lambda cfg: {}
    when: Callable[[RunConfig], bool] = lambda cfg: True
    description: str = ""
    counts: tuple[str, str] = ("rows", "rows")  # what the manifest's rows_in / rows_out count


@dataclass
class StageContext:
    """What a stage needs beyond its inputs: the config and lazily started engines."""

    cfg: RunConfig
    run_dir: Path
    _spark: Any = None

    @property
    def spark(self):
        if self._spark is None:
            from features.spark import spark_session

            self._spark = spark_session(self.cfg.engine.spark)
        return self._spark


@dataclass
class StageOutcome:
    stage: str
    status: str  # ran | skipped | failed | not-run
    seconds: float = 0.0
    rows_in: int | None = None
    rows_out: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class StageFailed(UserError):
    """A stage raised; earlier stages' outputs are kept and a re-run continues from this stage."""

    def __init__(self, stage: str, cause: str, run_dir: Path, log: Path | None):
        where = f" (traceback in {log})" if log else ""
        super().__init__(f"stage '{stage}' failed: {cause.rstrip('.')}{where}. Earlier stages are kept in {run_dir}; "
                         f"re-run the same command to continue from '{stage}'.")
        self.stage, self.cause, self.run_dir, self.log = stage, cause, run_dir, log

    def __reduce__(self):  # pickles with its constructor arguments (Ray sends errors between processes)
        return (type(self), (self.stage, self.cause, self.run_dir, self.log))


def _drop_empty_log(log: Path) -> None:
    """A stage that succeeded without engine output leaves no log (and no empty logs/ folder)."""
    if log.exists() and log.stat().st_size == 0:
        log.unlink()
    if log.parent.is_dir() and not any(log.parent.iterdir()):
        log.parent.rmdir()


def select_stages(graph: list[Stage], cfg: RunConfig, from_stage: str | None, only: str | None) -> tuple[list[Stage], set[str]]:
    """The stages that apply to this config, and the names that must re-run regardless of skipping."""
    stages = [s for s in graph if s.when(cfg)]
    names = [s.name for s in stages]
    for opt, val in (("--from", from_stage), ("--only", only)):
        if val is not None and val not in names:
            raise UserError(f"{opt} {val}: no such stage for a '{cfg.dataset.kind}' run; stages are: {', '.join(names)}.")
    if only:
        return [s for s in stages if s.name == only], {only}
    if from_stage:
        return stages, set(names[names.index(from_stage):])
    return stages, set()


def run_pipeline(cfg: RunConfig, run_dir: Path, graph: list[Stage], from_stage: str | None = None,
                 only: str | None = None, force: bool = False,
                 on_event: Callable[[str, StageOutcome | None], None] | None = None,
                 spark: Any = None, wait_lock: bool = False,
                 on_wait: Callable[[dict], None] | None = None, capture_logs: bool = False,
                 verbose: bool = False, trust_checkpoint: bool = False) -> list[StageOutcome]:
    """Run the applicable stages in order; return one outcome per stage. Raises `StageFailed`.

    `spark`: a SparkSession to use (e.g. the one spark-submit made); by default one is started from
    `cfg.engine.spark` the first time a stage needs it. The run folder's lock is held throughout:
    a second run on the same folder raises `RunLockedError` at once, or with `wait_lock` waits
    (`on_wait(holder)` is called first). `capture_logs`: engine output (fd 2: Spark's log4j, Ray,
    Python warnings) goes to `<run>/logs/<stage>.log` instead of the console (`verbose`: to both).
    `trust_checkpoint`: resume from checkpoints in the run folder even when another user wrote them.
    """
    stages, forced = select_stages(graph, cfg, from_stage, only)
    with run_lock(run_dir, wait=wait_lock, on_wait=on_wait):
        if not capture_logs:
            return _run_locked(cfg, run_dir, stages, forced, force, on_event, spark, None, trust_checkpoint)
        with StageLogs(run_dir / LOGS, verbose=verbose) as logs:
            return _run_locked(cfg, run_dir, stages, forced, force, on_event, spark, logs, trust_checkpoint)


def _run_locked(cfg: RunConfig, run_dir: Path, stages: list[Stage], forced: set[str], force: bool,
                on_event: Callable[[str, StageOutcome | None], None] | None, spark: Any,
                logs: StageLogs | None, trust_checkpoint: bool = False) -> list[StageOutcome]:
    ctx = StageContext(cfg=cfg, run_dir=run_dir, _spark=spark)
    outcomes: list[StageOutcome] = []
    emit = on_event or (lambda name, outcome: None)
    for stage in stages:
        for need in stage.needs:
            if not (run_dir / need / MANIFEST).exists():
                raise UserError(f"stage '{stage.name}' needs the output of '{need}', which {run_dir} does not have; "
                                f"run without --only/--from first.")
        inputs = {**stage.raw_inputs(cfg), **{n: run_dir / n for n in stage.needs}}
        section_cfg = {"sections": cfg.section_hash(*stage.sections) if stage.sections else "", "seed": cfg.seed}
        t0 = time.perf_counter()
        must_run = force or stage.name in forced
        if not must_run and stage_is_current(run_dir, stage.name, inputs, section_cfg, seed=cfg.seed):
            m = Manifest.read(run_dir / stage.name)  # skipped without starting any engine
            outcome = StageOutcome(stage.name, "skipped", time.perf_counter() - t0, m.rows_in, m.rows_out, m.summary)
            outcomes.append(outcome)
            emit(stage.name, outcome)
            continue
        emit(stage.name, None)
        log = run_dir / LOGS / f"{stage.name}.log"
        log.unlink(missing_ok=True)  # an earlier attempt's log is not this run's
        try:
            with logs.stage(stage.name) if logs is not None else nullcontext():
                fn = stage.run(ctx)
                m: Manifest = run_stage(run_dir, stage.name, fn, inputs, section_cfg, seed=cfg.seed,
                                        force=must_run, trust_checkpoint=trust_checkpoint)
        except Exception as err:  # noqa: BLE001 - reported as one line, traceback kept in a log
            if not isinstance(err, UserError):
                log.parent.mkdir(exist_ok=True)
                with log.open("a") as fh:
                    fh.write(traceback.format_exc())
            shown = log if log.exists() and not isinstance(err, UserError) else None
            cause = str(err).splitlines()[0] if str(err) else type(err).__name__
            outcome = StageOutcome(stage.name, "failed", time.perf_counter() - t0, error=cause)
            outcomes.append(outcome)
            emit(stage.name, outcome)
            raise StageFailed(stage.name, cause, run_dir, shown) from err
        _drop_empty_log(log)
        outcome = StageOutcome(stage.name, "skipped" if m.skipped else "ran",
                               m.seconds if not m.skipped else time.perf_counter() - t0,
                               m.rows_in, m.rows_out, m.summary)
        outcomes.append(outcome)
        emit(stage.name, outcome)
    return outcomes

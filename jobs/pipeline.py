"""Runs a stage graph over a run folder: skipping unchanged stages, `--from` / `--only`, one summary.

Example (a one-stage graph; `jobs.stages.graph_for(cfg)` is the real one):
    >>> import shutil, tempfile
    >>> from jobs.config import parse_config
    >>> cfg = parse_config({"dataset": {"path": "x.csv", "kind": "ctr", "roles": {"label": "y"}}}, check_paths=False)
    >>> graph = [Stage("hello", (), (), lambda ctx: lambda inputs, out: {"rows_out": 1})]
    >>> run = Path(tempfile.mkdtemp()) / "r1"
    >>> [(o.stage, o.status) for o in run_pipeline(cfg, run, graph)]
    [('hello', 'ran')]
    >>> [(o.stage, o.status) for o in run_pipeline(cfg, run, graph)]
    [('hello', 'skipped')]
    >>> shutil.rmtree(run.parent)
"""

from __future__ import annotations

import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

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
    options: dict[str, Any] = field(default_factory=dict)  # a stage's extra settings (CLI options), in its fingerprint

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


def stage_inputs(stage: Stage, cfg: RunConfig, run_dir: Path) -> dict[str, Path]:
    """What `stage` reads in a run folder: its raw inputs from the config and `run_dir/<need>` for each need."""
    return {**stage.raw_inputs(cfg), **{n: run_dir / n for n in stage.needs}}


def stage_config(stage: Stage, cfg: RunConfig, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a stage's fingerprint hashes besides its inputs: its config sections, the seed and any stage options.

    Options (e.g. `sessions train --positions 3`) count only when given, so a stage a CLI command
    builds with none of them is current for `sparserec run`.

    Example:
        >>> from jobs.config import parse_config
        >>> cfg = parse_config({"dataset": {"path": "x.csv", "kind": "ctr", "roles": {"label": "y"}}}, check_paths=False)
        >>> s = Stage("plan", ("rank",), ("embeddings",), lambda ctx: None)
        >>> sorted(stage_config(s, cfg)), sorted(stage_config(s, cfg, {"positions": 3}))
        (['sections', 'seed'], ['options', 'sections', 'seed'])
    """
    d: dict[str, Any] = {"sections": cfg.section_hash(*stage.sections) if stage.sections else "", "seed": cfg.seed}
    if options:
        d["options"] = dict(options)
    return d


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
    calls = []
    for stage in stages:
        calls.append(_Call(stage, stage.name, stage_inputs(stage, cfg, run_dir), stage_config(stage, cfg),
                           force or stage.name in forced))
    with run_lock(run_dir, wait=wait_lock, on_wait=on_wait):
        from jobs.config import save_config

        save_config(cfg, run_dir)  # <run>/config.yaml: the resolved config, read later by `predict --run`
        return _run_calls(cfg, run_dir, calls, on_event, spark, capture_logs, verbose, trust_checkpoint)


def run_only(cfg: RunConfig, graph: list[Stage], stage: str, output: Path, inputs: Mapping[str, Path | None] | None = None,
             options: Mapping[str, Any] | None = None, force: bool = False, spark: Any = None,
             on_event: Callable[[str, StageOutcome | None], None] | None = None, capture_logs: bool = False,
             trust_checkpoint: bool = False) -> StageOutcome:
    """`run --only STAGE` as the CLI stage commands use it: the same stage, function and fingerprint, skipped when current.

    `output` is the stage folder to write (`<run>/<stage>` makes it part of that run, so `sparserec
    run` on the same config finds it current); `inputs` replaces the stage's default inputs by name
    (`<run>/<need>` and the config's raw files), e.g. an ingest folder elsewhere, and `None` drops an
    optional one (rank without vocab); `options` are the
    stage's extra settings (hashed into the fingerprint only when given). Unlike `run --only`, a
    current output is not rebuilt unless `force`.

    Example (a one-stage graph; the CLI passes `jobs.stages.GRAPH`):
        >>> import shutil, tempfile
        >>> from jobs.config import parse_config
        >>> cfg = parse_config({"dataset": {"path": "x.csv", "kind": "ctr", "roles": {"label": "y"}}}, check_paths=False)
        >>> graph = [Stage("hello", (), (), lambda ctx: lambda inputs, out: {"rows_out": 1})]
        >>> out = Path(tempfile.mkdtemp()) / "r1" / "hello"
        >>> run_only(cfg, graph, "hello", out).status, run_only(cfg, graph, "hello", out).status
        ('ran', 'skipped')
        >>> shutil.rmtree(out.parent.parent)
    """
    chosen = next((s for s in graph if s.name == stage and s.when(cfg)), None)
    if chosen is None:
        raise UserError(f"stage '{stage}' does not apply to a '{cfg.dataset.kind}' dataset (dataset.kind in the config); "
                        "use a config of the right kind.")
    output = Path(output)
    run_dir = output.parent
    given = dict(inputs or {})  # a name given as None: the stage goes without that input
    reads = {k: v for k, v in stage_inputs(chosen, cfg, run_dir).items() if given.get(k, v) is not None}
    reads.update({k: Path(v) for k, v in given.items() if v is not None})
    for name, path in reads.items():
        if not path.exists():
            hint = f"run `sparserec run --only {name}` (or its command) first" if name in chosen.needs else "fix the path"
            raise UserError(f"{path}: not found; stage '{stage}' reads it as its '{name}' input; {hint}.")
    call = _Call(chosen, output.name, reads, stage_config(chosen, cfg, options), force, dict(options or {}))
    with run_lock(run_dir):
        return _run_calls(cfg, run_dir, [call], on_event, spark, capture_logs, False, trust_checkpoint)[0]


@dataclass
class _Call:
    """One stage to run: into which folder of the run, reading what, fingerprinted on what."""

    stage: Stage
    folder: str
    inputs: dict[str, Path]
    config: dict[str, Any]
    must_run: bool
    options: dict[str, Any] = field(default_factory=dict)


def _run_calls(cfg: RunConfig, run_dir: Path, calls: list[_Call],
               on_event: Callable[[str, StageOutcome | None], None] | None, spark: Any,
               capture_logs: bool, verbose: bool, trust_checkpoint: bool) -> list[StageOutcome]:
    """`_run_locked` with engine output sent to `<run>/logs/<stage>.log` when `capture_logs` (the lock is held)."""
    with StageLogs(run_dir / LOGS, verbose=verbose) if capture_logs else nullcontext() as logs:
        return _run_locked(cfg, run_dir, calls, on_event, spark, logs, trust_checkpoint)


def _run_locked(cfg: RunConfig, run_dir: Path, calls: list[_Call],
                on_event: Callable[[str, StageOutcome | None], None] | None, spark: Any,
                logs: StageLogs | None, trust_checkpoint: bool = False) -> list[StageOutcome]:
    ctx = StageContext(cfg=cfg, run_dir=run_dir, _spark=spark)
    outcomes: list[StageOutcome] = []
    emit = on_event or (lambda name, outcome: None)
    for call in calls:
        stage, name = call.stage, call.folder
        for need in stage.needs:
            if need in call.inputs and call.inputs[need] == run_dir / need and not (run_dir / need / MANIFEST).exists():
                raise UserError(f"stage '{stage.name}' needs the output of '{need}', which {run_dir} does not have; "
                                f"run without --only/--from first.")
        ctx.options = call.options
        t0 = time.perf_counter()
        if not call.must_run and stage_is_current(run_dir, name, call.inputs, call.config, seed=cfg.seed):
            m = Manifest.read(run_dir / name)  # skipped without starting any engine
            outcome = StageOutcome(name, "skipped", time.perf_counter() - t0, m.rows_in, m.rows_out, m.summary)
            outcomes.append(outcome)
            emit(name, outcome)
            continue
        emit(name, None)
        log = run_dir / LOGS / f"{name}.log"
        log.unlink(missing_ok=True)  # an earlier attempt's log is not this run's
        try:
            with logs.stage(name) if logs is not None else nullcontext():
                fn = stage.run(ctx)
                m: Manifest = run_stage(run_dir, name, fn, call.inputs, call.config, seed=cfg.seed,
                                        force=call.must_run, trust_checkpoint=trust_checkpoint)
        except Exception as err:  # noqa: BLE001 - reported as one line, traceback kept in a log
            if not isinstance(err, UserError):
                log.parent.mkdir(exist_ok=True)
                with log.open("a") as fh:
                    fh.write(traceback.format_exc())
            shown = log if log.exists() and not isinstance(err, UserError) else None
            cause = str(err).splitlines()[0] if str(err) else type(err).__name__
            outcome = StageOutcome(name, "failed", time.perf_counter() - t0, error=cause)
            outcomes.append(outcome)
            emit(name, outcome)
            raise StageFailed(name, cause, run_dir, shown) from err
        _drop_empty_log(log)
        outcome = StageOutcome(name, "skipped" if m.skipped else "ran",
                               m.seconds if not m.skipped else time.perf_counter() - t0,
                               m.rows_in, m.rows_out, m.summary)
        outcomes.append(outcome)
        emit(name, outcome)
    return outcomes

"""spark-submit entry point: the Spark feature stages of a run (ingest → vocab/sessions → quality → rank).

Under `spark-submit` the SparkSession (and its master) comes from spark-submit, never from the
config; run as `python -m jobs.spark_features` it is started from the config's `engine.spark`.
Stages go through `jobs.pipeline.run_pipeline`, so outputs, manifests and skipping are the same
as with `sparserec run`. On a real cluster the executors also need the project's code and its
Python dependencies (the stages run Python on the executors): install sparserec there, or ship
it with `--py-files` (e.g. `zip -r sparserec.zip features jobs embeddings pipelines models`).
Paths in the config must then be readable by every node (shared storage).

Example:
    $ PATH=.venv/bin:$PATH spark-submit --master 'local[2]' jobs/spark_features.py \\
          --config configs/sample_ctr.yaml --stages ingest,vocab
    $ python -m jobs.spark_features --config configs/sample_ctr.yaml --run-id nightly
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # launched as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.errors import UserError  # noqa: E402

FEATURE_STAGES = ("ingest", "vocab", "sessions", "quality", "rank")


def launched_by_spark_submit() -> bool:
    """True inside a Python driver started by spark-submit (it hands us its JVM gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def parse_stages(text: str | None, applicable: Sequence[str]) -> list[str]:
    """The requested feature stages, in graph order; all applicable ones when `text` is empty.

    Example:
        >>> parse_stages("rank, ingest", ["ingest", "vocab", "quality", "rank"])
        ['ingest', 'rank']
    """
    if not text:
        return list(applicable)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in applicable]
    if unknown:
        raise UserError(f"--stages: '{unknown[0]}' is not a Spark feature stage of this run; "
                        f"choose from: {', '.join(applicable)}.")
    return [s for s in applicable if s in wanted]


def submitted_session(cfg):
    """The SparkSession spark-submit started, with the config's SQL settings but not its master."""
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(cfg.engine.spark.app_name)
    b = b.config("spark.sql.shuffle.partitions", str(cfg.engine.spark.shuffle_partitions))
    b = b.config("spark.sql.session.timeZone", "UTC").config("spark.sql.ansi.enabled", "false")
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_feature_stages(cfg, run_dir: Path, stages: str | None = None, force: bool = False,
                       graph=None, on_event=None):
    """Run the Spark feature stages of `cfg` into `run_dir`; return the stage outcomes.

    Under spark-submit the config's master is replaced by the submitted one (the stages' config
    hash does not include `engine`, so skipping is unaffected).

    Example:
        (a stand-in graph whose stages write nothing; by default it is `jobs.stages.graph_for(cfg)`)

        >>> import shutil, tempfile
        >>> from jobs.config import parse_config
        >>> from jobs.pipeline import Stage
        >>> cfg = parse_config({"dataset": {"path": "x.csv", "kind": "ctr", "roles": {"label": "y"}}}, check_paths=False)
        >>> noop = lambda ctx: lambda inputs, out: {}
        >>> graph = [Stage("ingest", (), (), noop), Stage("vocab", ("ingest",), (), noop), Stage("train", ("vocab",), (), noop)]
        >>> run = Path(tempfile.mkdtemp())
        >>> [o.stage for o in run_feature_stages(cfg, run, "ingest,vocab", graph=graph)]
        ['ingest', 'vocab']
        >>> shutil.rmtree(run)
    """
    from jobs.pipeline import run_pipeline
    from jobs.stages import graph_for

    full = graph if graph is not None else graph_for(cfg)
    applicable = [s.name for s in full if s.name in FEATURE_STAGES]
    chosen = parse_stages(stages, applicable)
    if launched_by_spark_submit():
        spark = submitted_session(cfg)
        cfg.engine.spark.master = spark.sparkContext.master
    return run_pipeline(cfg, run_dir, [s for s in full if s.name in chosen], force=force, on_event=on_event)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spark_features.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="run config (YAML)")
    p.add_argument("--run-id", default=None, help="run folder under output_dir (default: the config's name)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(FEATURE_STAGES)} (default: all that apply)")
    p.add_argument("--force", action="store_true", help="re-run stages even when inputs and config are unchanged")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a user mistake is one line on stderr and exit status 2."""
    args = _args(argv)
    try:
        from jobs.config import load_config

        from jobs.preflight import check_header, check_output_dir

        cfg = load_config(args.config)
        run_dir = cfg.output_dir / (args.run_id or cfg.name)
        check_header(cfg, str(args.config))  # the master may come from spark-submit, so no engine check here
        check_output_dir(cfg, str(args.config), run_dir, create=True)

        def on_event(name, outcome):
            if outcome is not None:
                rows = f" rows_in={outcome.rows_in} rows_out={outcome.rows_out}" if outcome.rows_in is not None else ""
                print(f"{outcome.status:>7} {name:<9} {outcome.seconds:6.1f}s{rows}", flush=True)

        print(f"spark features {args.config} → {run_dir} (master: "
              f"{'from spark-submit' if launched_by_spark_submit() else cfg.engine.spark.master})", flush=True)
        outcomes = run_feature_stages(cfg, run_dir, args.stages, args.force, on_event=on_event)
        print(f"done: {', '.join(f'{o.stage}={o.status}' for o in outcomes)} in {run_dir}", flush=True)
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    finally:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())

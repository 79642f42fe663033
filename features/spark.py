"""A SparkSession from `SparkConfig` settings (local by default, any master by config).

Local masters start without the web UI unless `SparkConfig.conf` asks for it, with
`LOCAL_JAVA_OPTIONS` (collector and JIT settings) unless `spark.driver.extraJavaOptions` is given,
and with a JVM class-data archive when `SparkConfig.class_archive` names a folder
(features/class_archive.py).

Example::

    spark = spark_session(SparkConfig(master="local[2]"))
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from features.config import SparkConfig
from features.errors import UserError


# The local JVM's collector and JIT: the parallel collector costs less CPU per row than G1 on a few
# cores, and Spark's generated code for wide rows (40 typed columns and their checks) makes methods
# over HotSpot's 8,000-byte limit, which otherwise stay interpreted. Measured on the 200k-row
# Criteo-shaped file: ingest 60.3 -> 49.3 CPU-s (driver + JVM), executor CPU 26 -> 18 s.
LOCAL_JAVA_OPTIONS = "-XX:+UseParallelGC -XX:-DontCompileHugeMethods"


def _jvm_running() -> bool:
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


def spark_session(cfg: SparkConfig | None = None):
    """Get or create the SparkSession for `cfg`; the Python workers use this interpreter."""
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    b = (
        SparkSession.builder.master(cfg.master)
        .appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.ansi.enabled", "false")
    )
    marker = None
    if cfg.master.startswith("local"):
        # no web UI on one machine (it costs about a second of start-up); conf {"spark.ui.enabled": "true"} brings it back
        b = b.config("spark.ui.enabled", "false")
        if "spark.driver.extraJavaOptions" not in cfg.conf and not _jvm_running():
            opts = LOCAL_JAVA_OPTIONS
            if cfg.class_archive is not None:
                from features.class_archive import java_options

                archive, marker = java_options(Path(cfg.class_archive).expanduser())
                opts = f"{opts} {archive}"
            b = b.config("spark.driver.extraJavaOptions", opts)
    for k, v in cfg.conf.items():
        b = b.config(k, v)
    try:
        spark = b.getOrCreate()
    except Exception as err:  # noqa: BLE001 - PySparkRuntimeError [JAVA_GATEWAY_EXITED] and friends
        if type(err).__name__ == "Py4JJavaError" and not cfg.master.startswith("local"):
            # e.g. "All masters are unresponsive! Giving up." after Spark's registration retries
            raise UserError(f"engine.spark.master: no Spark session could be started on '{cfg.master}' (the "
                            "cluster refused or did not answer; Spark's messages are in the stage's log); check the "
                            "master URL and that the cluster is up, or use local[*].") from None
        if "JAVA_GATEWAY_EXITED" not in str(err) and "Java gateway" not in str(err):
            raise
        raise UserError(f"engine.spark: Spark did not start with master '{cfg.master}' and driver_memory "
                        f"'{cfg.driver_memory}' (the Java process exited; its reason is printed above or in the "
                        "stage's log); fix engine.spark.master / driver_memory (e.g. local[2], 2g), check "
                        "that Java 17 is installed (JAVA_HOME) and that the memory is available.") from None
    if marker is not None:  # this JVM dumps its classes at exit; the pid tells later starts when it is done
        marker.write_text(str(spark.sparkContext._gateway.proc.pid))
    spark.sparkContext.setLogLevel("ERROR")
    return spark

"""A SparkSession from `SparkConfig` settings (local by default, any master by config).

Local masters start without the web UI unless `SparkConfig.conf` asks for it.

Example:
    >>> spark = spark_session(SparkConfig(master="local[2]"))   # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys

from features.config import SparkConfig


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
    if cfg.master.startswith("local"):
        # no web UI on one machine (it costs about a second of start-up); conf {"spark.ui.enabled": "true"} brings it back
        b = b.config("spark.ui.enabled", "false")
    for k, v in cfg.conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark

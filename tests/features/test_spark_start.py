"""A Spark that cannot start (driver memory the machine lacks, a bad master) is one line naming the keys, not a Py4J trace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

START = """
from features.config import SparkConfig
from features.errors import UserError
from features.spark import spark_session
try:
    spark_session(SparkConfig(master="local[1]", driver_memory="99999999g"))
    print("STARTED")
except UserError as err:
    print("USER-ERROR", err)
"""


def test_jvm_that_exits_at_start_is_a_user_error():
    # a fresh interpreter: getOrCreate would reuse a SparkSession another test started in this process
    res = subprocess.run([sys.executable, "-c", START], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    out = res.stdout.strip().splitlines()[-1]
    assert out.startswith("USER-ERROR engine.spark: Spark did not start with master 'local[1]' and driver_memory "
                          "'99999999g'"), (out, res.stderr[-2000:])
    assert "fix engine.spark.master / driver_memory" in out and "Traceback" not in res.stderr
    assert "Could not reserve enough space" in res.stdout + res.stderr   # the JVM's own reason is printed by the JVM


def test_local_jvm_runs_the_parallel_collector_with_huge_methods_compiled(spark):
    """A local session's JVM gets LOCAL_JAVA_OPTIONS (unless the config sets its own): the parallel collector
    and the JIT compiling Spark's large generated methods (both cut the CPU per row of the feature stages)."""
    from features.spark import LOCAL_JAVA_OPTIONS

    assert LOCAL_JAVA_OPTIONS in spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    mgmt = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    collectors = {b.getName() for b in mgmt.getGarbageCollectorMXBeans()}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}, collectors
    flag = mgmt.getPlatformMXBean(spark.sparkContext._jvm.java.lang.Class.forName(
        "com.sun.management.HotSpotDiagnosticMXBean")).getVMOption("DontCompileHugeMethods")
    assert flag.getValue() == "false"

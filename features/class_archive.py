"""A JVM class-data archive (AppCDS) that makes a local Spark start about twice as fast.

Starting Spark is mostly the JVM loading and verifying the same ~15k classes every time. With
`SparkConfig.class_archive` set, the first start runs the JVM with `-XX:ArchiveClassesAtExit`:
when it exits it dumps the classes it loaded (about 150 MB) into a file named after it. A later
start adopts a finished dump (its JVM gone) as the archive and passes `-XX:SharedArchiveFile`, so
the JVM maps those classes instead of loading them again. An archive belongs to one Java and
Spark build (its name says which); one that does not fit is refused by the JVM itself, which then
starts as usual (`-Xshare:auto`, the default).

Example::

    java_options(Path("~/.cache/sparserec/jvm").expanduser())
    # -> '-XX:SharedArchiveFile=/root/.cache/sparserec/jvm/spark-3f2a9c01d4e7.jsa -Xlog:cds=off -Xlog:cds+dynamic=off'
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"   # the dump lists every class it skips on stdout


def build_key() -> str:
    """A short hash naming the Java and Spark build an archive belongs to.

    Example:
        >>> len(build_key())
        12
    """
    import pyspark

    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    java = os.path.realpath(java) if java else "java"
    parts = [java, str(os.stat(java).st_mtime_ns) if os.path.exists(java) else "", pyspark.__version__,
             str(os.stat(os.path.join(os.path.dirname(pyspark.__file__), "jars")).st_mtime_ns)]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:12]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _adopt_finished_dump(folder: Path, key: str, final: Path) -> None:
    """Rename a dump whose JVM has exited (so the file is complete) to the archive's name; remove
    the other finished dumps (two JVMs that started before either had finished both dump)."""
    for marker in sorted(folder.glob(f"spark-{key}.*.pid")):
        part = marker.with_suffix(".part")
        try:
            pid = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and _alive(pid):
            continue
        try:
            if part.exists() and part.stat().st_size > 0 and not final.exists():
                os.replace(part, final)
            marker.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
        except OSError:  # another process adopted or removed it first
            continue


def java_options(folder: Path) -> tuple[str, Path | None]:
    """JVM options that use the archive in `folder`, or make one at exit; and the marker file in
    which the caller records the dumping JVM's pid (None when the archive is used).

    Example::

        java_options(Path("/tmp/jvm"))[0].startswith("-XX:")
        # -> True
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = build_key()
    final = folder / f"spark-{key}.jsa"
    _adopt_finished_dump(folder, key, final)
    if final.exists():
        return f"-XX:SharedArchiveFile={final} {QUIET}", None
    name = f"spark-{key}.{os.getpid()}"
    return f"-XX:ArchiveClassesAtExit={folder / (name + '.part')} {QUIET}", folder / (name + ".pid")

"""The JVM class-archive bookkeeping: which options a start gets, and when a dump becomes the archive."""

from __future__ import annotations

import os
import subprocess
import sys

from features.class_archive import build_key, java_options


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_first_start_dumps_and_names_its_marker(tmp_path):
    opts, marker = java_options(tmp_path)
    key = build_key()
    assert opts.startswith(f"-XX:ArchiveClassesAtExit={tmp_path}/spark-{key}.{os.getpid()}.part ")
    assert marker == tmp_path / f"spark-{key}.{os.getpid()}.pid"


def test_a_finished_dump_becomes_the_archive_and_a_running_one_does_not(tmp_path):
    key = build_key()
    (tmp_path / f"spark-{key}.1.part").write_bytes(b"still dumping")
    (tmp_path / f"spark-{key}.1.pid").write_text(str(os.getpid()))        # its JVM is alive
    opts, marker = java_options(tmp_path)
    assert "ArchiveClassesAtExit" in opts and marker is not None
    assert not (tmp_path / f"spark-{key}.jsa").exists()

    (tmp_path / f"spark-{key}.2.part").write_bytes(b"done")
    (tmp_path / f"spark-{key}.2.pid").write_text(str(_dead_pid()))      # its JVM has exited
    opts, marker = java_options(tmp_path)
    archive = tmp_path / f"spark-{key}.jsa"
    assert opts.split()[0] == f"-XX:SharedArchiveFile={archive}" and marker is None
    assert archive.read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, f"spark-{key}.1.part", f"spark-{key}.1.pid"])


def test_an_empty_dump_is_dropped_not_adopted(tmp_path):
    key = build_key()
    (tmp_path / f"spark-{key}.3.part").write_bytes(b"")
    (tmp_path / f"spark-{key}.3.pid").write_text(str(_dead_pid()))
    opts, _ = java_options(tmp_path)
    assert "ArchiveClassesAtExit" in opts and not list(tmp_path.glob("*.part"))


def test_a_second_finished_dump_is_removed_once_an_archive_exists(tmp_path):
    key = build_key()
    (tmp_path / f"spark-{key}.jsa").write_bytes(b"archive")
    (tmp_path / f"spark-{key}.4.part").write_bytes(b"late dump")
    (tmp_path / f"spark-{key}.4.pid").write_text(str(_dead_pid()))
    opts, marker = java_options(tmp_path)
    assert opts.startswith("-XX:SharedArchiveFile=") and marker is None
    assert [p.name for p in tmp_path.iterdir()] == [f"spark-{key}.jsa"]
    assert (tmp_path / f"spark-{key}.jsa").read_bytes() == b"archive"

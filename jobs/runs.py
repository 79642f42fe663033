"""Run folders: `runs/<run-id>/<stage>/`, written atomically, each with a `manifest.json`.

A stage function takes the paths it reads and the (temporary) folder it writes, and returns a
summary dict. `run_stage` creates the temporary folder, calls the function, writes the manifest
and renames the folder into place only when the function returned. A stage that raises leaves the
previous complete output untouched, and a stage whose inputs and config are unchanged is skipped.

Example:
    >>> import tempfile
    >>> def count(inputs, out):
    ...     _ = (out / "n.txt").write_text("3")
    ...     return {"rows_in": 3, "rows_out": 3}
    >>> run = Path(tempfile.mkdtemp()) / "r1"
    >>> m = run_stage(run, "count", count, inputs={}, config={"k": 1})
    >>> m.skipped, m.rows_out, (run / "count" / "n.txt").read_text()
    (False, 3, '3')
    >>> run_stage(run, "count", count, inputs={}, config={"k": 1}).skipped
    True
    >>> shutil.rmtree(run.parent)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

from jobs.run_lock import run_lock, stale_temps, temp_name
from jobs.trust import check_owned

MANIFEST = "manifest.json"
WORK_DIR = ".checkpoints"  # <run>/.checkpoints/<stage>-<fingerprint>/: a stage's work that a re-run resumes
_TRACKED_LIBS = ("sparserec", "pyspark", "torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu", "ray", "feast", "pydantic", "numpy", "pyarrow")

StageFn = Callable[[Mapping[str, Path], Path], Mapping[str, Any]]


@dataclass
class Manifest:
    """What a stage read, what it wrote, with what settings, how long it took."""

    stage: str
    run_id: str
    inputs: dict[str, dict[str, Any]]
    config_hash: str
    seed: int | None
    fingerprint: str
    started_at: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    rows_in: int | None = None
    rows_out: int | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    python: str = platform.python_version()
    skipped: bool = False

    def write(self, folder: Path) -> None:
        d = asdict(self)
        d.pop("skipped")
        (folder / MANIFEST).write_text(json.dumps(d, indent=2, sort_keys=True, default=str) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        d = json.loads((folder / MANIFEST).read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def library_versions() -> dict[str, str]:
    out = {}
    for lib in _TRACKED_LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def config_hash(config: Any) -> str:
    """Stable short hash of a config (pydantic model, dict, or anything JSON-serialisable)."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_input(path: Path) -> dict[str, Any]:
    """Identity of an input: a stage folder by its manifest fingerprint, a file by size and content hash."""
    path = Path(path)
    if (path / MANIFEST).exists():
        m = json.loads((path / MANIFEST).read_text())
        return {"path": str(path), "stage_fingerprint": m.get("fingerprint")}
    if path.is_file():
        st = path.stat()
        d: dict[str, Any] = {"path": str(path), "bytes": st.st_size}
        if st.st_size <= 256 << 20:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            d["sha256"] = h.hexdigest()
        else:
            d["mtime"] = st.st_mtime
        return d
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
                "mtime": max((p.stat().st_mtime for p in files), default=0.0)}
    return {"path": str(path), "missing": True}


def _fingerprint(stage: str, inputs: dict[str, dict[str, Any]], cfg_hash: str, seed: int | None) -> str:
    ident = {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in inputs.items()}
    blob = json.dumps({"stage": stage, "inputs": ident, "config": cfg_hash, "seed": seed}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def new_run_id(name: str = "run") -> str:
    return f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def stage_is_current(run_dir: Path, stage: str, inputs: Mapping[str, Path], config: Any, seed: int | None = None) -> bool:
    """True when `run_dir/stage` holds a complete output made from the same inputs and config."""
    final = Path(run_dir) / stage
    if not (final / MANIFEST).exists():
        return False
    described = {k: describe_input(Path(v)) for k, v in inputs.items()}
    fp = _fingerprint(stage, described, config_hash(config), seed)
    return Manifest.read(final).fingerprint == fp


def run_stage(run_dir: Path, stage: str, fn: StageFn, inputs: Mapping[str, Path], config: Any,
              seed: int | None = None, force: bool = False, trust_checkpoint: bool = False) -> Manifest:
    """Run `fn(inputs, tmp_dir)` and atomically publish its output as `run_dir/stage`.

    The returned summary may hold `rows_in` / `rows_out`; both land in the manifest.
    When the existing output was made from identical inputs and config, nothing runs and the
    existing manifest is returned with `skipped=True` (unless `force`). The run folder's lock
    (`jobs.run_lock`) is held meanwhile: a second process writing the same run folder gets a
    one-line `RunLockedError`. A stage taking `work_dir` resumes from the checkpoints there only when
    this user owns them (or `trust_checkpoint`): `jobs.trust.check_owned`.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _run_stage_locked(run_dir, stage, fn, inputs, config, seed, force, trust_checkpoint)


def _run_stage_locked(run_dir: Path, stage: str, fn: StageFn, inputs: Mapping[str, Path], config: Any,
                      seed: int | None, force: bool, trust_checkpoint: bool = False) -> Manifest:
    final = run_dir / stage
    described = {k: describe_input(Path(v)) for k, v in inputs.items()}
    cfg_hash = config_hash(config)
    fp = _fingerprint(stage, described, cfg_hash, seed)
    if not force and (final / MANIFEST).exists():
        old = Manifest.read(final)
        if old.fingerprint == fp:
            old.skipped = True
            return old
    for stale in stale_temps(run_dir, stage):  # left by a process killed mid-stage (never a live one's)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run_dir / temp_name(stage)
    tmp.mkdir()
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    t0 = time.perf_counter()
    # a stage taking `work_dir` (training: checkpoints) gets a folder that outlives a failed attempt: a re-run with the
    # same fingerprint finds it and resumes; it is removed once the stage publishes
    work = {"work_dir": run_dir / WORK_DIR / f"{stage}-{fp}"} if "work_dir" in inspect.signature(fn).parameters else {}
    if work:  # its checkpoints are unpickled on resume: only this user's, unless trusted (jobs/trust.py)
        check_owned(work["work_dir"], trust_checkpoint)
    try:
        summary = dict(fn({k: Path(v) for k, v in inputs.items()}, tmp, **work) or {})
        manifest = Manifest(
            stage=stage, run_id=run_dir.name, inputs=described, config_hash=cfg_hash, seed=seed,
            fingerprint=fp, started_at=started, seconds=round(time.perf_counter() - t0, 3),
            summary={k: v for k, v in summary.items() if k not in ("rows_in", "rows_out")},
            rows_in=summary.get("rows_in"), rows_out=summary.get("rows_out"), libraries=library_versions(),
        )
        manifest.write(tmp)
        _publish(tmp, final)
        for done in (run_dir / WORK_DIR).glob(f"{stage}-*"):  # this attempt's and those of older fingerprints
            shutil.rmtree(done, ignore_errors=True)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path) -> None:
    """Swap `tmp` into `final`: the old output is moved aside first and removed only after the rename."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def list_runs(output_dir: Path) -> list[Path]:
    """Run folders under `output_dir`, newest first."""
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return []
    runs = [p for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def stale_stages(run_dir: Path) -> dict[str, str]:
    """Stages of `run_dir` made from an upstream stage output that has changed since: stage -> why.

    A stage is stale when the fingerprint it recorded for an input stage differs from that stage's
    manifest now (e.g. ingest re-ran with an edited config and vocab then failed), or when one of its
    input stages is stale or gone. Raw input files are not re-read here.

    Example:
        >>> import tempfile
        >>> run, write = Path(tempfile.mkdtemp()), lambda inputs, out: {}
        >>> for stage, reads, settings in (("ingest", {}, 1), ("vocab", {"ingest": run / "ingest"}, 1),
        ...                                ("rank", {"vocab": run / "vocab"}, 1), ("ingest", {}, 2)):  # ingest again, edited
        ...     _ = run_stage(run, stage, write, reads, {"v": settings})
        >>> stale_stages(run)
        {'vocab': 'made from an older ingest', 'rank': 'its input vocab is stale'}
    """
    run_dir = Path(run_dir)
    manifests = {m.stage: m for m in read_manifests(run_dir)}
    stale: dict[str, str] = {}
    for m in manifests.values():  # in run order, so an upstream stage is judged first
        for name, d in m.inputs.items():
            if "stage_fingerprint" not in d:
                continue
            folder = run_dir / Path(d["path"]).name
            up = manifests.get(folder.name) if folder.parent == run_dir else None
            if up is None and not (Path(d["path"]) / MANIFEST).exists():
                stale[m.stage] = f"its input {name} is gone"
            elif up is not None and up.fingerprint != d["stage_fingerprint"]:
                stale[m.stage] = f"made from an older {name}"
            elif up is not None and up.stage in stale:
                stale[m.stage] = f"its input {name} is stale"
            if m.stage in stale:
                break
    return stale


def read_manifests(run_dir: Path) -> list[Manifest]:
    """Manifests of the complete stages of a run, in the order they ran (by start time)."""
    ms = [Manifest.read(p) for p in Path(run_dir).iterdir() if (p / MANIFEST).exists()]
    return sorted(ms, key=lambda m: m.started_at)

"""`sparserec sessions prepare`: public sequence data → the sessions-stage layout that `sessions train` reads.

Reads sequences and item attributes as they are shipped (`pipelines/sessions/sources.py`), splits
them by a protocol, holds a seeded share of items out of training (cold items) and writes the
layout of docs/stages.md with `pipelines/session_layout.write_layout`, plus `quarantine/` (bad
sequence rows), `quarantine_items/` (bad attribute rows) and `import.json` (counts that reconcile).

Protocols:
- `leave-one-out` (RecBole, S3-Rec): per sequence, the last item is the test target and the
  second to last the validation target; train holds the rest. Train row: `items[:-2]`;
  validation row: `items[:-1]` (its last item is the target); test row: all items (the last is
  the target). Sequences need 3 items (shorter ones are counted, not used).
- `time`: whole sessions by start time, the latest `test_share` of sessions is the test set and the
  `validation_share` before it validation (needs an event log with a time column). Sessions need
  2 items.

Cold items: `cold_share` of the items (picked with `seed` from the sorted item ids) are removed
from the train rows, so wherever they are validation/test targets they are cold. Attribute ids
are learnt on the items of the train rows; values seen only on other items are 1 (unknown).
`max_length` keeps the last N items of every written row. The catalogue is the items of the used
sequences; items without an attribute row keep missing attributes (`in_catalogue` false).

Example::

    s = import_sessions(Path("Toys_and_Games.txt.gz"), Path("Toys_and_Games_item2attributes.json.gz"),
                        Path("out"), ImportConfig(cold_share=0.1))
    s["sessions"]
    # -> {'train': 19412, 'validation': 19412, 'test': 19412}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.errors import ConfigError, DataError
from pipelines.sessions.layout import SPLITS, _time_split, encode_items, write_layout
from pipelines.sessions.sources import ItemSource, Sequence, SequenceSource, read_item_attributes, read_sequences, reasons

PROTOCOLS = ("leave-one-out", "time")
QUARANTINE_COLUMNS = ["file", "line", "raw", "reason"]


@dataclass
class ImportConfig:
    """How `import_sessions` splits and filters; see the module docstring."""

    protocol: Literal["leave-one-out", "time"] = "leave-one-out"
    cold_share: float = 0.0
    max_length: int | None = None
    seed: int = 0
    validation_share: float = 0.1
    test_share: float = 0.1
    categorical: list[str] | None = None       # attribute table columns (default: detected)
    multi_valued: list[str] | None = None
    separator: str = "|"
    columns: dict[str, str | None] = field(default_factory=dict)   # session / item / time / user column names

    def check(self) -> None:
        """One-line `ConfigError`s for settings that cannot work."""
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol '{self.protocol}': use one of {', '.join(PROTOCOLS)}.")
        if not 0.0 <= self.cold_share < 1.0:
            raise ConfigError(f"--cold-share {self.cold_share}: must be at least 0 and below 1 (e.g. 0.1).")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"--max-length {self.max_length}: must be at least 2 (a context item and a target).")
        if self.protocol == "time" and not (0 <= self.validation_share and 0 <= self.test_share
                                            and self.validation_share + self.test_share < 1):
            raise ConfigError(f"validation share {self.validation_share} + test share {self.test_share}: "
                              "both at least 0 and their sum below 1.")


def _row(seq: Sequence, items: list[str], times: list[int], max_length: int | None) -> dict[str, Any]:
    cut = slice(-max_length, None) if max_length else slice(None)
    return {"session_id": seq.session_id, "user_id": seq.user_id, "items": items[cut], "timestamps": times[cut]}


def _times(seq: Sequence) -> list[int]:
    """The sequence's timestamps, or its positions 0.. when the source has none."""
    return list(seq.timestamps) if seq.timestamps is not None else list(range(len(seq.items)))


def _train_row(seq: Sequence, items: list[str], times: list[int], cold: set[str], max_length: int | None,
               counts: dict[str, int]) -> dict[str, Any] | None:
    """The train row without cold items; None (counted) when fewer than 2 items are left."""
    keep = [k for k, i in enumerate(items) if i not in cold]
    counts["train_events_cold_removed"] += len(items) - len(keep)
    if len(keep) < 2:
        counts["train_rows_too_short"] += 1
        return None
    return _row(seq, [items[k] for k in keep], [times[k] for k in keep], max_length)


def split_sequences(sequences: list[Sequence], cfg: ImportConfig, cold: set[str]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The train / validation / test frames of `cfg.protocol` and the counts of what was left out."""
    counts = {"train_events_cold_removed": 0, "train_rows_too_short": 0}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    if cfg.protocol == "leave-one-out":
        for seq in sequences:
            times = _times(seq)
            tr = _train_row(seq, seq.items[:-2], times[:-2], cold, cfg.max_length, counts)
            if tr is not None:
                rows["train"].append(tr)
            rows["validation"].append(_row(seq, seq.items[:-1], times[:-1], cfg.max_length))
            rows["test"].append(_row(seq, seq.items, times, cfg.max_length))
        return {k: pd.DataFrame(v, columns=["session_id", "user_id", "items", "timestamps"]) for k, v in rows.items()}, counts
    frame = pd.DataFrame({"session_id": [s.session_id for s in sequences], "user_id": [s.user_id for s in sequences],
                          "items": [s.items for s in sequences], "timestamps": [_times(s) for s in sequences],
                          "start": [_times(s)[0] for s in sequences]})
    parts = _time_split(frame, cfg.validation_share, cfg.test_share)
    for name, df in parts.items():
        for r in df.itertuples(index=False):
            seq = Sequence(r.session_id, r.user_id, list(r.items), list(r.timestamps))
            if name == "train":
                tr = _train_row(seq, seq.items, seq.timestamps, cold, cfg.max_length, counts)
                if tr is not None:
                    rows["train"].append(tr)
            else:
                rows[name].append(_row(seq, seq.items, seq.timestamps, cfg.max_length))
    return {k: pd.DataFrame(v, columns=["session_id", "user_id", "items", "timestamps"]) for k, v in rows.items()}, counts


def pick_cold(items: list[str], share: float, seed: int) -> set[str]:
    """`round(share * len(items))` items picked with `seed` from the sorted ids (the same ids and seed give the same set)."""
    ordered = sorted(items)
    n = int(round(share * len(ordered)))
    if n == 0:
        return set()
    rng = np.random.default_rng(seed)
    return {ordered[k] for k in rng.choice(len(ordered), size=n, replace=False)}


def _catalogue(catalogue_ids: list[str], attrs: ItemSource | None, train_items: set[str],
               cfg: ImportConfig) -> tuple[pd.DataFrame, dict[str, Any], dict[str, int]]:
    """`items/` rows for the catalogue: encoded attributes (ids learnt on train items) and `in_catalogue`."""
    ids = pd.DataFrame({"item_id": catalogue_ids})
    if attrs is None:
        table, cat, multi = ids, [], []
        known = np.zeros(len(ids), dtype=bool)
        only_attrs = 0
    else:
        table = ids.merge(attrs.table, on="item_id", how="left")
        known = table["item_id"].isin(set(attrs.table["item_id"])).to_numpy()
        cat, multi = attrs.categorical, attrs.multi_valued
        only_attrs = int((~attrs.table["item_id"].isin(set(catalogue_ids))).sum())
    enc, vocab = encode_items(table, "item_id", cat, multi, separator=cfg.separator,
                              fit=table["item_id"].isin(train_items).to_numpy() & known)
    enc["in_catalogue"] = known
    vocab["built_on"] = "items of train rows"
    counts = {"items": len(enc), "items_without_attributes": int((~known).sum()), "items_only_in_attributes": only_attrs}
    return enc, vocab, counts


def _write_quarantine(rows: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS).astype({"file": str, "line": "int64", "raw": str, "reason": str})
    frame.to_parquet(folder / "part-0.parquet", index=False)


def reconcile(counts: dict[str, Any]) -> None:
    """Check that every input row, sequence and event is accounted for (a failure is a bug, not bad input)."""
    n, sess = counts["sequences_used"], counts["sessions"]
    checks = [("rows_in", counts["rows_in"], counts["rows_ok"] + counts["rows_quarantined"]),
              ("rows_ok", counts["rows_ok"], counts["sequences_in"] if counts["format"] == "sequence_lines" else counts["events_ok"]),
              ("sequences_in", counts["sequences_in"], n + counts["sequences_too_short"]),
              ("events_ok", counts["events_ok"], counts["events_used"] + counts["events_in_too_short_sequences"])]
    if counts["protocol"] == "leave-one-out":
        checks += [("sessions.test", sess["test"], n), ("sessions.validation", sess["validation"], n),
                   ("sessions.train", sess["train"] + counts["train_rows_too_short"], n)]
    else:
        checks.append(("sessions", sess["train"] + counts["train_rows_too_short"] + sess["validation"] + sess["test"], n))
    if counts.get("item_rows_in") is not None:
        checks.append(("item_rows_in", counts["item_rows_in"], counts["item_rows_ok"] + counts["item_rows_quarantined"]))
    for name, left, right in checks:
        if left != right:
            raise RuntimeError(f"import counts do not reconcile: {name} {left} != {right}")


def import_sessions(sequences: Path, items: Path | None, out: Path, cfg: ImportConfig) -> dict[str, Any]:
    """Read, split and write; returns the counts (also in `out/import.json`). See the module docstring."""
    cfg.check()
    out = Path(out)
    src: SequenceSource = read_sequences(Path(sequences), **{f"{k}_column": v for k, v in cfg.columns.items()})
    if cfg.protocol == "time" and not src.has_time:
        raise ConfigError(f"{sequences}: --protocol time needs event times and this file has none "
                          f"({'sequence lines' if src.kind == 'sequence_lines' else 'no time column'}); "
                          "use --protocol leave-one-out or an event log with a time column (--time-column).")
    need = 3 if cfg.protocol == "leave-one-out" else 2
    used = [s for s in src.sequences if len(s.items) >= need]
    short = [s for s in src.sequences if len(s.items) < need]
    if not used:
        raise DataError(f"{sequences}: no sequence with at least {need} items ({len(src.sequences)} read, "
                        f"{src.rows_quarantined} rows quarantined); {cfg.protocol} needs {need} items per sequence.")
    catalogue_ids = sorted({i for s in used for i in s.items})
    cold = pick_cold(catalogue_ids, cfg.cold_share, cfg.seed)
    splits, split_counts = split_sequences(used, cfg, cold)
    if splits["train"].empty:
        why = f"once the cold items are removed (lower --cold-share {cfg.cold_share})" if cold else \
            "(leave-one-out trains on all but the last 2 items: sequences need 4 or more)"
        raise DataError(f"{sequences}: no training row is left: every train row has fewer than 2 items {why}.")
    attrs = read_item_attributes(Path(items), cfg.categorical, cfg.multi_valued, cfg.separator) if items else None
    train_items = {i for xs in splits["train"]["items"] for i in xs}
    table, vocab, item_counts = _catalogue(catalogue_ids, attrs, train_items, cfg)
    if attrs is not None and len(attrs.table) and item_counts["items_without_attributes"] == len(table):
        raise DataError(f"{items}: no item of the sequences has an attribute row (sequences hold e.g. "
                        f"'{catalogue_ids[0]}', the attributes e.g. '{attrs.table['item_id'].iloc[0]}'); "
                        "pass the attribute file of these sequences (the item ids must match).")
    info = write_layout(out, splits, table, vocab, {"protocol": cfg.protocol, "cold_share": cfg.cold_share,
                                                   "seed": cfg.seed, "held_out_items": sorted(cold),
                                                   "max_length": cfg.max_length, "ties": "file order"})
    _write_quarantine(src.quarantine, out / "quarantine")
    _write_quarantine(attrs.quarantine if attrs else [], out / "quarantine_items")
    counts: dict[str, Any] = {
        "format": src.kind, "columns": src.columns or None, "protocol": cfg.protocol,
        "rows_in": src.rows_in, "rows_ok": src.rows_ok, "rows_quarantined": src.rows_quarantined,
        "quarantine_reasons": reasons(src.quarantine),
        "sequences_in": len(src.sequences), "sequences_used": len(used), "sequences_too_short": len(short),
        "events_ok": sum(len(s.items) for s in src.sequences), "events_used": sum(len(s.items) for s in used),
        "events_in_too_short_sequences": sum(len(s.items) for s in short),
        "cold_items": len(cold), **split_counts, **item_counts,
        "item_rows_in": attrs.rows_in if attrs else None,
        "item_rows_ok": attrs.rows_in - len(attrs.quarantine) if attrs else None,
        "item_rows_quarantined": len(attrs.quarantine) if attrs else None,
        "item_quarantine_reasons": reasons(attrs.quarantine) if attrs else None,
        "attributes": {"categorical": vocab["categorical"], "multi_valued": vocab["multi_valued"], "sizes": vocab["sizes"]},
        "sessions": info["sessions"],
        "targets": {"validation": _targets(splits["validation"], cfg, cold), "test": _targets(splits["test"], cfg, cold)},
        "settings": {k: v for k, v in asdict(cfg).items()},
    }
    reconcile(counts)
    (out / "import.json").write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    return {"rows_in": counts["rows_in"], "rows_out": counts["events_used"], **counts}


def _targets(frame: pd.DataFrame, cfg: ImportConfig, cold: set[str]) -> dict[str, int] | None:
    """Leave-one-out: the last item of each row is the target; how many, and how many of them are cold items."""
    if cfg.protocol != "leave-one-out":
        return None
    last = [xs[-1] for xs in frame["items"]]
    return {"n": len(last), "cold": sum(1 for i in last if i in cold)}

"""Read the `sessions` stage output into tensors: the item catalogue and (prefix → next item) examples.

The stage folder (docs/stages.md) holds `train|validation|test/` Parquet (`items`: raw item ids in
time order), `items/` Parquet (int-encoded attributes), `item_vocab.json` and `split.json`.
The catalogue is every item of `items/` (sorted by item id; index 0 is padding), so items that
appear only after training (cold items) are candidates too.

Bad data is counted, never silently dropped: empty sessions, events whose item has no row in
`items/` (dropped from the session), sessions left with fewer than 2 items, attribute ids outside
the vocabulary (replaced by 1 = unknown) and duplicate item rows (first kept) all land in
`SessionData.issues`. Items the Spark stage lists with `in_catalogue = false` (seen in sessions,
absent from the item table, or every item when the dataset has no item table) stay in the
catalogue with missing attributes (id 0): ID models (SASRec, GRU4Rec, popularity) train on them
as on any item; they are counted (`items_without_metadata`, `<split>_events_without_metadata`).
An items table without attribute columns is a catalogue of ids only. Missing files or columns
raise `SessionDataError` naming file and fix.

Example::

    data = load_sessions(Path("runs/r1/sessions"))
    ex = data.examples("train", max_length=50)
    ex.items.shape[0] == ex.targets.shape[0]
    # -> True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from features.errors import DataError
from models.item_features import ItemFeatures

SPLITS = ("train", "validation", "test")


class SessionDataError(DataError):
    """The sessions stage folder cannot be read as written."""


@dataclass
class SessionExamples:
    """Prefixes (right-padded catalogue indices) and the item that followed each."""

    items: torch.Tensor      # [E, L] long, 0 = padding
    lengths: torch.Tensor    # [E] long, >= 1
    targets: torch.Tensor    # [E] long catalogue index

    def __len__(self) -> int:
        return int(self.targets.numel())

    def subset(self, idx: torch.Tensor) -> "SessionExamples":
        return SessionExamples(self.items[idx], self.lengths[idx], self.targets[idx])


@dataclass
class SessionData:
    """Catalogue metadata, encoded sessions per split and the data-quality counts."""

    item_ids: list[str]                      # catalogue index i + 1 ↔ item_ids[i]
    features: ItemFeatures
    sizes: dict[str, int]                    # attribute → vocabulary size
    sessions: dict[str, list[np.ndarray]]    # split → sessions as arrays of catalogue indices
    issues: dict[str, int] = field(default_factory=dict)
    value_names: dict[str, dict[int, str]] = field(default_factory=dict)   # attribute → id → raw value

    def value_name(self, attribute: str, value_id: int) -> str:
        """The raw value of an attribute id ("category" 3 → "books"); "<missing>" / "<unknown>" for ids 0 / 1."""
        name = self.value_names.get(attribute, {}).get(int(value_id))
        return name if name is not None else {0: "<missing>", 1: "<unknown>"}.get(int(value_id), str(int(value_id)))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def train_counts(self) -> torch.Tensor:
        """Occurrences of each catalogue row in the training sessions [N+1]."""
        flat = np.concatenate(self.sessions["train"]) if self.sessions["train"] else np.zeros(0, np.int64)
        return torch.from_numpy(np.bincount(flat, minlength=self.n_items + 1).astype(np.int64))

    def examples(self, split: str, max_length: int, positions: str | int = "all") -> SessionExamples:
        """(prefix → next) examples of a split.

        `positions="all"`: every next item of every session (training); an int n: the last n
        items of each session, each predicted from the items before it (evaluation).
        """
        rows: list[np.ndarray] = []
        targets: list[int] = []
        for s in self.sessions[split]:
            first = 1 if positions == "all" else max(1, len(s) - int(positions))
            for t in range(first, len(s)):
                rows.append(s[max(0, t - max_length):t])
                targets.append(int(s[t]))
        items = torch.zeros(len(rows), max_length, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for i, r in enumerate(rows):
            items[i, : len(r)] = torch.from_numpy(r)
            lengths[i] = len(r)
        return SessionExamples(items, lengths, torch.tensor(targets, dtype=torch.long))


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise SessionDataError(f"{path}: {what} is missing; run the sessions stage (`sparserec features sessions`) "
                               "or point --sessions at its output folder.")
    return pd.read_parquet(path)


def _sizes(vocab: dict[str, Any], items: pd.DataFrame, attrs: list[str], source: Path) -> dict[str, int]:
    """Vocabulary size per attribute from item_vocab.json (`sizes` map, or a `size` per attribute)."""
    sizes: dict[str, int] = {}
    for a in attrs:
        if isinstance(vocab.get("sizes"), dict) and a in vocab["sizes"]:
            sizes[a] = int(vocab["sizes"][a])
        elif isinstance(vocab.get(a), dict) and "size" in vocab[a]:
            sizes[a] = int(vocab[a]["size"])
        elif isinstance(vocab.get(a), int):
            sizes[a] = int(vocab[a])
        else:
            raise SessionDataError(f"{source}: no vocabulary size for attribute '{a}'; "
                                   "item_vocab.json needs sizes.<attribute> (re-run the sessions stage).")
    return sizes


def load_sessions(folder: Path, attributes: list[str] | None = None) -> SessionData:
    """Read a sessions stage folder; `attributes` restricts the item attributes used (default: all)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionDataError(f"{folder}: sessions folder not found; pass the output folder of the sessions stage.")
    items = _read_parquet(folder / "items", "the items/ table")
    vocab_path = folder / "item_vocab.json"
    if not vocab_path.exists():
        raise SessionDataError(f"{vocab_path}: missing; the sessions stage writes it beside items/.")
    vocab = json.loads(vocab_path.read_text())
    if "item_id" not in items.columns:
        raise SessionDataError(f"{folder / 'items'}: column 'item_id' is missing; the items table needs it.")
    issues: dict[str, int] = {}
    items["item_id"] = items["item_id"].astype(str)
    no_meta: set[str] = set()
    if "in_catalogue" in items.columns:  # the Spark stage lists items seen in sessions but absent from the item table
        known = items.pop("in_catalogue").fillna(False).astype(bool).to_numpy()
        no_meta = set(items["item_id"][~known])
        issues["items_without_metadata"] = len(no_meta)
    dup = items["item_id"].duplicated()
    issues["items_duplicate_rows"] = int(dup.sum())
    items = items[~dup].sort_values("item_id", kind="stable").reset_index(drop=True)
    if len(items) == 0:
        raise SessionDataError(f"{folder / 'items'}: the items table is empty; the catalogue needs at least one item.")
    attrs = [c for c in items.columns if c != "item_id"] if attributes is None else attributes
    missing = [a for a in attrs if a not in items.columns]
    if missing:
        raise SessionDataError(f"{folder / 'items'}: attribute column '{missing[0]}' is missing; "
                               f"available: {', '.join(c for c in items.columns if c != 'item_id')}.")
    sizes = _sizes(vocab, items, attrs, vocab_path)
    categorical: dict[str, torch.Tensor] = {}
    multi: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    unknown = 0
    for a in attrs:
        col = items[a]
        sample = next((v for v in col if v is not None), None)
        if sample is not None and not np.isscalar(sample):
            lists = [np.asarray(v if v is not None else [], dtype=np.int64) for v in col]
            lens = np.array([len(v) for v in lists], dtype=np.int64)
            vals = np.concatenate(lists) if lists else np.zeros(0, np.int64)
            bad = (vals < 0) | (vals >= sizes[a])
            unknown += int(bad.sum())
            vals = np.where(bad, 1, vals)
            offsets = np.concatenate([[0, 0], np.cumsum(lens)])     # row 0 = padding, an empty bag
            multi[a] = (torch.from_numpy(offsets), torch.from_numpy(vals))
        else:
            ids = col.fillna(0).to_numpy().astype(np.int64)
            bad = (ids < 0) | (ids >= sizes[a])
            unknown += int(bad.sum())
            categorical[a] = torch.from_numpy(np.concatenate([[0], np.where(bad, 1, ids)]))
    issues["unknown_attribute_values"] = unknown
    index = {item: i + 1 for i, item in enumerate(items["item_id"])}

    sessions: dict[str, list[np.ndarray]] = {}
    for split in SPLITS:
        df = _read_parquet(folder / split, f"the {split}/ split")
        if "items" not in df.columns:
            raise SessionDataError(f"{folder / split}: column 'items' is missing; it must hold each session's item ids.")
        if "timestamps" in df.columns:   # part files come in any order: sort by session start for determinism
            start = df["timestamps"].map(lambda t: t[0] if t is not None and len(t) else -1)
            df = df.assign(_start=start).sort_values(["_start", "session_id"] if "session_id" in df else ["_start"], kind="stable")
        out: list[np.ndarray] = []
        for raw in df["items"]:
            raw = [] if raw is None else list(raw)
            if not raw:
                issues[f"{split}_sessions_empty"] = issues.get(f"{split}_sessions_empty", 0) + 1
                continue
            enc = [index.get(str(i), 0) for i in raw]
            if no_meta:
                n_no_meta = sum(1 for i in raw if str(i) in no_meta)
                if n_no_meta:
                    key = f"{split}_events_without_metadata"
                    issues[key] = issues.get(key, 0) + n_no_meta
            dropped = sum(1 for e in enc if e == 0)
            if dropped:
                issues[f"{split}_events_missing_metadata"] = issues.get(f"{split}_events_missing_metadata", 0) + dropped
            enc = [e for e in enc if e > 0]
            if len(enc) < 2:
                issues[f"{split}_sessions_too_short"] = issues.get(f"{split}_sessions_too_short", 0) + 1
                continue
            out.append(np.asarray(enc, dtype=np.int64))
        sessions[split] = out
        issues[f"{split}_sessions_in"] = int(len(df))
        issues[f"{split}_sessions_used"] = len(out)
    if not sessions["train"]:
        raise SessionDataError(f"{folder / 'train'}: no usable training session (need >= 2 items of the items/ table each); "
                               f"counts: {issues}.")
    # value → id maps ("ids"; layouts written before the pandas writer used that name hold "values"),
    # kept inverted to name categories in reports
    maps = vocab.get("ids") or vocab.get("values") or {}
    names = {a: {int(i): str(v) for v, i in m.items()} for a, m in maps.items() if a in categorical and isinstance(m, dict)}
    return SessionData(list(items["item_id"]), ItemFeatures(categorical, multi), sizes, sessions, issues, names)

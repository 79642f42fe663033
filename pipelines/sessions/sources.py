"""Read public sequence data as it is shipped: sequence lines, event logs, item-attribute maps and tables.

Plain Python (no engine). Every input row is either used or quarantined with a reason (`file`,
`line`, `raw`, `reason`, as the ingest stage writes them), and the reader reports how many rows it
read, so callers can check `rows_in == rows_ok + rows_quarantined`.

Sequences (`read_sequences`, the format is detected from the first non-empty line):
- sequence lines, one per user/session: `user i1 i2 ...` separated by white space (RecBole /
  S3-Rec releases, e.g. `Toys_and_Games.txt`); no timestamps, the order is the line's order.
- an event log with a header row, comma- or tab-separated: a session (or user) column, an item
  column and optionally a time column (RecBole `.inter` headers such as `user_id:token` are read
  too). Equal times keep the file's order.

Item attributes (`read_item_attributes`): a JSON map item → list of attribute ids (S3-Rec
`*_item2attributes.json`, one multi-valued attribute `attributes`) or a CSV/TSV table with a header:
an item-id column and named attribute columns, single-valued or multi-valued (values joined by
`separator`). Both may be gzipped.

Example::

    src = read_sequences(Path("Toys_and_Games.txt.gz"))
    src.kind, len(src.sequences), src.rows_quarantined
    # -> ('sequence_lines', 19412, 0)
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from features.errors import DataError

SESSION_COLUMNS = ("session_id", "session", "sessionid", "user_id", "user", "userid", "uid", "visitorid")
USER_COLUMNS = ("user_id", "user", "userid", "uid", "visitorid")
ITEM_COLUMNS = ("item_id", "item", "itemid", "iid", "product_id", "asin")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date", "event_time")


@dataclass
class Sequence:
    """One user's or session's items in order (timestamps when the source has them)."""

    session_id: str
    user_id: str | None
    items: list[str]
    timestamps: list[int] | None = None


@dataclass
class SequenceSource:
    """What `read_sequences` found: the sequences, their row counts and the quarantined rows."""

    kind: str                       # "sequence_lines" | "event_log"
    sequences: list[Sequence]
    rows_in: int                    # lines (sequence lines) or data rows (event log), empty lines included
    quarantine: list[dict] = field(default_factory=list)
    columns: dict[str, str | None] = field(default_factory=dict)   # event log: role → column name

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def rows_ok(self) -> int:
        return self.rows_in - len(self.quarantine)

    @property
    def has_time(self) -> bool:
        return self.kind == "event_log" and self.columns.get("time") is not None


@dataclass
class ItemSource:
    """Item attributes: `table` has `item_id` and one column per attribute (multi-valued cells are lists)."""

    table: pd.DataFrame
    categorical: list[str]
    multi_valued: list[str]
    rows_in: int
    quarantine: list[dict] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes without the line end) of a plain or gzipped file."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            yield n, raw.rstrip(b"\r\n")


def _table_fields(raw: bytes, delim: str, width: int) -> tuple[list[str], str | None]:
    """One data line of a delimited table: (fields, None), or ([], quarantine reason) for a line that is not
    UTF-8, is empty, or has another number of fields than the header."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [], "invalid_utf8"
    if not text.strip():
        return [], "empty_line"
    fields = next(csv.reader([text], delimiter=delim))
    if len(fields) != width:
        return [], f"wrong_column_count:expected {width}, got {len(fields)}"
    return fields, None


def _bad(path: Path, line: int, raw: bytes | str, reason: str) -> dict:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return {"file": str(path), "line": line, "raw": text, "reason": reason}


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; check the path.")
    return path


def _delimiter(header: str) -> str | None:
    return "\t" if "\t" in header else "," if "," in header else None


def _field_name(raw: str) -> str:
    """A header field as a role name: lower case, RecBole's `:type` suffix dropped (`user_id:token` → user_id)."""
    return raw.strip().split(":")[0].strip().lower()


def _first_text_line(path: Path) -> str:
    for _, raw in _lines(path):
        text = raw.decode("utf-8", errors="replace")
        if text.strip():
            return text
    raise DataError(f"{path}: the file is empty; it needs one sequence per line or an event log with a header.")


def read_sequences(path: Path, session_column: str | None = None, item_column: str | None = None,
                   time_column: str | None = None, user_column: str | None = None) -> SequenceSource:
    """Sequences of a sequence-lines file or an event log (detected; see the module docstring).

    A `*_column` names a column of an event log; giving any of them reads the file as an event log.
    """
    path = _check_file(path, "the sequences file")
    first = _first_text_line(path)
    delim = _delimiter(first)
    names = [_field_name(f) for f in (first.split(delim) if delim else first.split())]
    given = any(c is not None for c in (session_column, item_column, time_column, user_column))
    if given or (delim is not None and any(n in ITEM_COLUMNS for n in names)):
        return _read_event_log(path, delim or ",", session_column, item_column, time_column, user_column)
    return _read_sequence_lines(path)


def _read_sequence_lines(path: Path) -> SequenceSource:
    """`user i1 i2 ...` per line; empty lines, lines without items and repeated users are quarantined."""
    sequences: list[Sequence] = []
    bad: list[dict] = []
    first_line: dict[str, int] = {}
    rows = 0
    for n, raw in _lines(path):
        rows += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(_bad(path, n, raw, "invalid_utf8"))
            continue
        tokens = text.split()
        if not tokens:
            bad.append(_bad(path, n, raw, "empty_line"))
        elif len(tokens) == 1:
            bad.append(_bad(path, n, raw, "no_items"))
        elif tokens[0] in first_line:
            bad.append(_bad(path, n, raw, f"duplicate_session:first at line {first_line[tokens[0]]}"))
        else:
            first_line[tokens[0]] = n
            sequences.append(Sequence(tokens[0], tokens[0], tokens[1:]))
    return SequenceSource("sequence_lines", sequences, rows, bad)


def _pick(names: list[str], given: str | None, candidates: tuple[str, ...], role: str, path: Path,
          option: str, required: bool) -> int | None:
    """Index of the column playing `role`: the given name, else the first known name in the header."""
    if given is not None:
        key = _field_name(given)
        if key not in names:
            raise DataError(f"{path}: {option} '{given}' is not a column (the header has {', '.join(names)}); "
                            f"pass one of them.")
        return names.index(key)
    for c in candidates:
        if c in names:
            return names.index(c)
    if required:
        raise DataError(f"{path}: no {role} column (the header has {', '.join(names)}); name it with {option}.")
    return None


def _parse_time(text: str) -> float | None:
    """Epoch seconds of a number or an ISO date/time (naive times are UTC); None when neither."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _read_event_log(path: Path, delim: str, session_column: str | None, item_column: str | None,
                    time_column: str | None, user_column: str | None) -> SequenceSource:
    """An event log with a header: events grouped by session in file order, then stably sorted by time."""
    lines = _lines(path)
    header_line = 0
    header: list[str] = []
    rows = 0
    for n, raw in lines:
        text = raw.decode("utf-8", errors="replace")
        if text.strip():
            header_line, header = n, [_field_name(f) for f in next(csv.reader([text], delimiter=delim))]
            break
        rows += 1       # empty lines before the header are data rows quarantined below
    bad: list[dict] = [_bad(path, k, b"", "empty_line") for k in range(1, header_line)]
    s = _pick(header, session_column, SESSION_COLUMNS, "session or user", path, "--session-column", True)
    i = _pick(header, item_column, ITEM_COLUMNS, "item", path, "--item-column", True)
    t = _pick(header, time_column, TIME_COLUMNS, "time", path, "--time-column", False)
    u = _pick(header, user_column, USER_COLUMNS, "user", path, "--user-column", False)
    if u == s:
        u = None
    events: dict[str, list[tuple[float, int, str]]] = {}
    users: dict[str, str | None] = {}
    for n, raw in lines:
        rows += 1
        fields, reason = _table_fields(raw, delim, len(header))
        if reason is not None:
            bad.append(_bad(path, n, raw, reason))
            continue
        sid, item = fields[s].strip(), fields[i].strip()
        if not sid or not item:
            bad.append(_bad(path, n, raw, f"missing_value:{header[s] if not sid else header[i]}"))
            continue
        when = 0.0
        if t is not None:
            parsed = _parse_time(fields[t])
            if parsed is None or parsed != parsed:
                bad.append(_bad(path, n, raw, f"non_numeric:{header[t]}"))
                continue
            when = parsed
        events.setdefault(sid, []).append((when, n, item))
        user = (fields[u].strip() or None) if u is not None else (sid if header[s] in USER_COLUMNS else None)
        users.setdefault(sid, user)
    sequences = []
    for sid, evs in events.items():
        evs.sort(key=lambda e: e[0])          # stable: equal times keep the file order
        sequences.append(Sequence(sid, users[sid], [e[2] for e in evs],
                                  [int(e[0]) for e in evs] if t is not None else None))
    cols = {"session": header[s], "item": header[i], "time": header[t] if t is not None else None,
            "user": header[u] if u is not None else None}
    return SequenceSource("event_log", sequences, rows, bad, cols)


def read_item_attributes(path: Path, categorical: list[str] | None = None, multi_valued: list[str] | None = None,
                         separator: str = "|", item_column: str | None = None) -> ItemSource:
    """Item attributes from a JSON map (`.json`, `.json.gz`) or a CSV/TSV table (see the module docstring).

    For a table, `categorical` / `multi_valued` name the attribute columns; by default every column
    but the item id, multi-valued when some value holds `separator`.
    """
    path = _check_file(path, "the item attributes file")
    first = _first_text_line(path)
    if first.lstrip().startswith("{"):
        return _read_attribute_map(path)
    return _read_attribute_table(path, categorical, multi_valued, separator, item_column)


def _read_attribute_map(path: Path) -> ItemSource:
    """{item: [attribute ids]}: one multi-valued attribute `attributes`; entries that are not lists are quarantined."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); item attributes need a map item → list of attribute ids "
                        "or a CSV table with a header.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the JSON is a {type(data).__name__}, not a map item → list of attribute ids.")
    ids, values, bad = [], [], []
    for n, (item, attrs) in enumerate(data.items(), start=1):
        if attrs is None:
            attrs = []
        elif isinstance(attrs, (str, int)) and not isinstance(attrs, bool):
            attrs = [attrs]
        if not isinstance(attrs, list) or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in attrs):
            bad.append(_bad(path, n, json.dumps({item: attrs}), "not_a_list_of_ids"))
            continue
        ids.append(str(item))
        values.append([str(a) for a in attrs])
    table = pd.DataFrame({"item_id": ids, "attributes": values})
    return ItemSource(table, [], ["attributes"], len(data), bad)


def _read_attribute_table(path: Path, categorical: list[str] | None, multi_valued: list[str] | None,
                          separator: str, item_column: str | None) -> ItemSource:
    """A CSV/TSV table with a header; bad rows (column count, empty or repeated id, invalid UTF-8) are quarantined."""
    lines = _lines(path)
    rows, bad = 0, []
    header: list[str] = []
    delim = ","
    for n, raw in lines:
        text = raw.decode("utf-8", errors="replace")
        if text.strip():
            delim = "\t" if "\t" in text else ","
            header = [f.strip() for f in next(csv.reader([text], delimiter=delim))]
            break
        rows += 1
        bad.append(_bad(path, n, raw, "empty_line"))
    lowered = [_field_name(h) for h in header]
    idx = _pick(lowered, item_column, ITEM_COLUMNS, "item id", path, "--items-id-column", True)
    id_name = header[idx]
    records: list[list[str]] = []
    seen: dict[str, int] = {}
    for n, raw in lines:
        rows += 1
        fields, reason = _table_fields(raw, delim, len(header))
        if reason is not None:
            bad.append(_bad(path, n, raw, reason))
        elif not fields[idx].strip():
            bad.append(_bad(path, n, raw, f"missing_value:{id_name}"))
        elif fields[idx].strip() in seen:
            bad.append(_bad(path, n, raw, f"duplicate_item:first at line {seen[fields[idx].strip()]}"))
        else:
            seen[fields[idx].strip()] = n
            records.append(fields)
    frame = pd.DataFrame(records, columns=header, dtype=object) if records else pd.DataFrame(columns=header, dtype=object)
    others = [h for h in header if h != id_name]
    if categorical is None and multi_valued is None:
        multi = [c for c in others if frame[c].map(lambda v: separator in v).any()]
        cat = [c for c in others if c not in multi]
    else:
        cat, multi = list(categorical or []), list(multi_valued or [])
        missing = [c for c in cat + multi if c not in header]
        if missing:
            raise DataError(f"{path}: column '{missing[0]}' is missing (the file has {', '.join(header)}); "
                            "name the attribute columns with --categorical / --multi-valued.")
    table = pd.DataFrame({"item_id": frame[id_name].map(str.strip)})
    for c in cat:
        table[c] = frame[c].map(lambda v: v.strip() or None)
    for c in multi:
        table[c] = frame[c].map(lambda v: [x.strip() for x in v.split(separator) if x.strip()])
    return ItemSource(table, cat, multi, rows, bad)


def reasons(quarantine: list[dict]) -> dict[str, int]:
    """Quarantined rows per reason (the part before ':')."""
    return dict(sorted(Counter(q["reason"].split(":")[0] for q in quarantine).items()))

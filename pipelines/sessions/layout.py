"""Write the `sessions` stage layout (docs/stages.md) from pandas frames.

The Spark stage (features/sessions.py) is the production path. This writer produces the same
folder from small pandas frames: for tests, and for MovieLens-100K turned into per-user,
time-ordered sequences (genres and release year as item metadata, some items held out as cold).

Layout: `train|validation|test/part-0.parquet` (`session_id`, `user_id`, `items` list<string>,
`timestamps` list<long>), `items/part-0.parquet` (`item_id` string, one int column per categorical
attribute, one list<int> column per multi-valued attribute; id 0 = missing, 1 = unknown, 2.. by
count desc then value), `item_vocab.json` (`sizes`: attribute → ids incl. the 2 reserved; `ids`: attribute → value → id;
`categorical`, `multi_valued`: the attribute names), `split.json`.

Example::

    summary = synthetic_layout(Path("sessions.csv"), Path("items.csv"), Path("out"))
    summary["sessions"]["test"] > 0
    # -> True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from features.errors import DataError

SPLITS = ("train", "validation", "test")


def _value_ids(values: pd.Series) -> dict[str, int]:
    """Value → id (2.. by count desc, ties by value); 0 and 1 stay reserved for missing / unknown."""
    counts = values.dropna().astype(str).value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {v: i + 2 for i, (v, _) in enumerate(order)}


def _as_list(value: Any, separator: str) -> list[str]:
    """A multi-valued cell as a list of strings: a list as is, a string split at `separator`, missing → []."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(x) for x in value]
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
        return []
    return str(value).split(separator)


def encode_items(items: pd.DataFrame, item_id: str, categorical: list[str], multi_valued: list[str],
                 separator: str = " ", fit: "pd.Series | np.ndarray | None" = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Int-encode item attributes; returns the `items/` frame and the `item_vocab.json` content.

    `fit` (a boolean mask over the rows, default all): the rows whose values get ids (e.g. the
    items of training sessions); values of the other rows only are 1 (unknown). Multi-valued cells
    are lists or `separator`-joined strings.
    """
    mask = np.ones(len(items), dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    out = pd.DataFrame({"item_id": items[item_id].astype(str)})
    sizes: dict[str, int] = {}
    values: dict[str, dict[str, int]] = {}
    for col in categorical:
        ids = _value_ids(items[col][mask])
        out[col] = items[col].map(lambda v: 0 if pd.isna(v) else ids.get(str(v), 1)).astype("int64")
        sizes[col], values[col] = len(ids) + 2, ids
    for col in multi_valued:
        lists = items[col].map(lambda v: _as_list(v, separator))
        ids = _value_ids(lists[mask].explode())
        out[col] = lists.map(lambda xs: [ids.get(x, 1) for x in xs])
        sizes[col], values[col] = len(ids) + 2, ids
    vocab = {"sizes": sizes, "ids": values, "categorical": categorical, "multi_valued": multi_valued}
    return out, vocab


def write_layout(out: Path, splits: Mapping[str, pd.DataFrame], items: pd.DataFrame,
                 vocab: dict[str, Any], extra_split_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the split frames (`session_id`, `user_id`, `items`, `timestamps`) and the items table."""
    out = Path(out)
    train_items = set(i for xs in splits["train"]["items"] for i in xs)
    split_info: dict[str, Any] = {"sessions": {}, "cold_items": {}, **(extra_split_info or {})}
    for name in SPLITS:
        df = splits[name].reset_index(drop=True)
        (out / name).mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / name / "part-0.parquet", index=False)
        split_info["sessions"][name] = int(len(df))
        seen = set(i for xs in df["items"] for i in xs)
        split_info["cold_items"][name] = sorted(seen - train_items)
    (out / "items").mkdir(parents=True, exist_ok=True)
    items.to_parquet(out / "items" / "part-0.parquet", index=False)
    (out / "item_vocab.json").write_text(json.dumps(vocab, indent=1, sort_keys=True) + "\n")
    (out / "split.json").write_text(json.dumps(split_info, indent=1, sort_keys=True) + "\n")
    return split_info


def _time_split(sessions: pd.DataFrame, validation_share: float, test_share: float) -> dict[str, pd.DataFrame]:
    """Time-ordered split by session start: the latest `test_share` of sessions is the test set."""
    sessions = sessions.sort_values(["start", "session_id"], kind="stable").reset_index(drop=True)
    n = len(sessions)
    n_test, n_valid = int(round(n * test_share)), int(round(n * validation_share))
    cut_v, cut_t = n - n_test - n_valid, n - n_test
    parts = {"train": sessions.iloc[:cut_v], "validation": sessions.iloc[cut_v:cut_t], "test": sessions.iloc[cut_t:]}
    return {k: v.drop(columns=["start"]) for k, v in parts.items()}


def _read_csv(path: Path, what: str, **kw) -> pd.DataFrame:
    """`pd.read_csv` with a one-line error naming the file when it is missing or empty."""
    if not Path(path).exists():
        raise DataError(f"{path}: {what} not found; check the path.")
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} is empty; it needs a header row and at least one row.") from None


def _need_columns(df: pd.DataFrame, columns: list[str], path: Path, fix: str) -> None:
    """A one-line error naming the first missing column, what the file has, and the fix."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column '{missing[0]}' is missing (the file has {', '.join(map(str, df.columns))}); {fix}.")


def declared_item_columns(items_csv: Path, truth: Path | None = None) -> tuple[list[str], list[str]]:
    """The catalogue's (categorical, multi-valued) attribute columns.

    Taken from `truth.json` beside the file when it declares `item_metadata` (as `sparserec generate
    sessions` writes), else every column but `item_id`, all single-valued.
    """
    truth = Path(items_csv).parent / "truth.json" if truth is None else truth
    if truth.exists():
        meta = json.loads(truth.read_text()).get("item_metadata")
        if isinstance(meta, dict):
            return list(meta.get("categorical", [])), list(meta.get("multi_valued", []))
    header = _read_csv(items_csv, "the item table", nrows=0, dtype=str)
    return [c for c in header.columns if c != "item_id"], []


def synthetic_layout(sessions_csv: Path, items_csv: Path, out: Path, validation_share: float = 0.1,
                     test_share: float = 0.1, categorical: list[str] | None = None,
                     multi_valued: list[str] | None = None) -> dict[str, Any]:
    """The layout from the `features.synthetic` sessions generator's CSV files (session id given).

    Events with equal timestamps keep their file order (stable sort). `categorical` / `multi_valued`
    default to the catalogue's declared columns (`declared_item_columns`); a column that the item
    table lacks is a one-line `DataError`.
    """
    ev = _read_csv(sessions_csv, "the events file", dtype={"item_id": str, "user_id": str, "session_id": str})
    _need_columns(ev, ["session_id", "user_id", "item_id", "timestamp"], Path(sessions_csv),
                  "prepare-synthetic reads the CSV that `sparserec generate sessions` writes")
    ev = ev.sort_values(["session_id", "timestamp"], kind="stable")
    grouped = ev.groupby("session_id", sort=True)
    sessions = pd.DataFrame({
        "session_id": list(grouped.groups.keys()),
        "user_id": grouped["user_id"].first().to_numpy(),
        "items": [list(x) for x in grouped["item_id"].agg(list)],
        "timestamps": [[int(t) for t in x] for x in grouped["timestamp"].agg(list)],
        "start": grouped["timestamp"].min().to_numpy(),
    })
    raw_items = _read_csv(items_csv, "the item table", dtype=str)
    if categorical is None and multi_valued is None:
        categorical, multi_valued = declared_item_columns(items_csv)
    categorical, multi_valued = list(categorical or []), list(multi_valued or [])
    _need_columns(raw_items, ["item_id", *categorical, *multi_valued], Path(items_csv),
                  "name the item table's attribute columns with --categorical / --multi-valued")
    items, vocab = encode_items(raw_items, "item_id", categorical, multi_valued)
    return write_layout(out, _time_split(sessions, validation_share, test_share), items, vocab)


ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]


def _first_line(path: Path) -> str:
    with open(path, encoding="latin-1") as fh:
        return fh.readline().rstrip("\r\n")


def _has_header(line: str, sep: str) -> bool:
    return not line.split(sep)[0].strip().isdigit()


def read_movielens(ml100k: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(ratings, movies)` of MovieLens-100K in either form, detected from the first line of each file.

    GroupLens' original files (`u.data` tab-separated `user item rating timestamp`, `u.item`
    `|`-separated latin-1, both without header; genre names from `u.genre` when present) or the
    reformatted copy with header rows (`user|item|rating|timestamp`; `item|title|releaseDate|...`).
    Returns ratings with `user`, `item`, `rating`, `timestamp` in file order, and movies with
    `item`, `releaseDate` and one 0/1 column per genre.
    """
    ml100k = Path(ml100k)
    data, item = ml100k / "u.data", ml100k / "u.item"
    for f in (data, item):
        if not f.exists():
            raise DataError(f"{f}: not found; pass the MovieLens-100K folder (u.data, u.item), e.g. ../shared/data/ml-100k.")
    line = _first_line(data)
    sep = "\t" if "\t" in line else "|"
    header = _has_header(line, sep)
    ratings = _read_csv(data, "u.data", sep=sep, header=0 if header else None,
                        names=None if header else ["user", "item", "rating", "timestamp"])
    _need_columns(ratings, ["user", "item", "timestamp"], data, "u.data needs user, item, rating, timestamp")
    line = _first_line(item)
    if _has_header(line, "|"):
        movies = _read_csv(item, "u.item", sep="|", encoding="latin-1")
        _need_columns(movies, ["item", "releaseDate"], item, "u.item needs item, title, releaseDate, ... and 19 genre flags")
        genres = list(movies.columns[-19:])
    else:
        genres = ML100K_GENRES
        if (ml100k / "u.genre").exists():
            names = pd.read_csv(ml100k / "u.genre", sep="|", header=None, encoding="latin-1").dropna()
            genres = [str(g) for g in names[0]]
        movies = _read_csv(item, "u.item", sep="|", encoding="latin-1", header=None,
                           names=["item", "title", "releaseDate", "videoReleaseDate", "imdbURL", *genres])
    return ratings, movies


def movielens_layout(ml100k: Path, out: Path, holdout: int = 3, cold_share: float = 0.1, seed: int = 0,
                     max_length: int = 200) -> dict[str, Any]:
    """MovieLens-100K as per-user, time-ordered sequences; the last `holdout` items per user are the test targets.

    Reads GroupLens' original files or the reformatted copy (`read_movielens`). A user's ratings
    are ordered by timestamp; ratings with the same timestamp keep their order in `u.data` (a
    stable sort, as RecBole orders them). Train holds each user's sequence without its last
    `holdout + 1` items and without the `cold_share` of movies picked (seeded) as cold, so those
    are never seen in training. Validation: the sequence without its last `holdout` items (target:
    the item just before the test targets). Test: the full sequence (its last `max_length` items);
    evaluate its last `holdout` positions. Metadata: primary genre (category), primary genre
    × release decade (subcategory), release year, decade, all genres (multi-valued).
    """
    ratings, movies = read_movielens(ml100k)
    genre_cols = list(movies.columns[-19:])
    flags = movies[genre_cols].fillna(0).to_numpy().astype(bool)
    genres = [[g for g, f in zip(genre_cols, row) if f] for row in flags]
    year = pd.to_datetime(movies["releaseDate"], format="%d-%b-%Y", errors="coerce").dt.year
    decade = (year // 10 * 10).astype("Int64").astype(str).replace("<NA>", None)
    primary = [g[0] if g else None for g in genres]
    raw_items = pd.DataFrame({
        "item_id": movies["item"].astype(str),
        "category": primary,
        "subcategory": [f"{p}-{d}" if p is not None and d is not None else None for p, d in zip(primary, decade)],
        "year": year.astype("Int64").astype(str).replace("<NA>", None),
        "decade": decade,
        "genres": [" ".join(g) if g else None for g in genres],
    })
    items, vocab = encode_items(raw_items, "item_id", ["category", "subcategory", "year", "decade"], ["genres"])

    rng = np.random.default_rng(seed)
    all_items = np.sort(ratings["item"].unique())
    cold = set(str(i) for i in rng.choice(all_items, size=int(round(cold_share * all_items.size)), replace=False))
    ratings = ratings.sort_values(["user", "timestamp"], kind="stable")   # ties keep file order
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for user, g in ratings.groupby("user", sort=True):
        its, ts = g["item"].astype(str).tolist(), g["timestamp"].astype(int).tolist()
        keep = [k for k in range(len(its) - holdout - 1) if its[k] not in cold]
        tr_items, tr_ts = [its[k] for k in keep], [ts[k] for k in keep]
        if len(tr_items) >= 2:
            rows["train"].append({"session_id": f"u{user}", "user_id": str(user), "items": tr_items[-max_length:],
                                  "timestamps": tr_ts[-max_length:]})
        end = len(its) - holdout
        rows["validation"].append({"session_id": f"u{user}", "user_id": str(user), "items": its[:end][-max_length:],
                                   "timestamps": ts[:end][-max_length:]})
        rows["test"].append({"session_id": f"u{user}", "user_id": str(user), "items": its[-max_length:],
                             "timestamps": ts[-max_length:]})
    splits = {k: pd.DataFrame(v) for k, v in rows.items()}
    return write_layout(out, splits, items, vocab, {"holdout": holdout, "cold_share": cold_share,
                                                     "held_out_items": sorted(cold), "ties": "file order"})

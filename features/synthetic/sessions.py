"""Session logs of item views with an item catalogue carrying metadata, and cold-start items.

Planted (and listed in `truth.json`): sessions are category-coherent (most views stay in the
session's category, often in the previous item's subcategory); item popularity is Zipf within a
category; each item has category, subcategory, brand, price bucket and a few text tokens that
depend on its subcategory; a share of items is released only in the last period (cold start) and
is never viewed before its release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .common import write_table, write_truth, zipf_probs

CATEGORIES = 12
SUBCATS_PER_CATEGORY = 4
BRANDS = 200
PRICE_BUCKETS = 10
TOKENS = 300
COHERENCE = 0.85
SAME_SUBCATEGORY = 0.6
COLD_SHARE = 0.1
COLD_PERIOD = 0.2      # the last 20% of the time range
COLD_BOOST = 4.0       # new items are popular when they appear
DAYS = 28


def _catalogue(rng: np.random.Generator, n_items: int) -> pd.DataFrame:
    cat_p = zipf_probs(CATEGORIES, 0.8)
    category = rng.choice(CATEGORIES, size=n_items, p=cat_p)
    sub = category * SUBCATS_PER_CATEGORY + rng.integers(0, SUBCATS_PER_CATEGORY, size=n_items)
    brand_home = rng.integers(0, CATEGORIES, size=BRANDS)
    brand = np.empty(n_items, dtype=np.int64)
    for c in range(CATEGORIES):
        own = np.flatnonzero(brand_home == c)
        own = own if own.size else np.arange(BRANDS)
        m = category == c
        brand[m] = own[rng.integers(0, own.size, size=int(m.sum()))]
    sub_price = rng.integers(0, PRICE_BUCKETS, size=CATEGORIES * SUBCATS_PER_CATEGORY)
    price = np.clip(sub_price[sub] + rng.integers(-1, 2, size=n_items), 0, PRICE_BUCKETS - 1)
    sub_tokens = rng.integers(0, TOKENS, size=(CATEGORIES * SUBCATS_PER_CATEGORY, 8))
    tokens = []
    for i in range(n_items):
        k = int(rng.integers(3, 6))
        own = rng.choice(sub_tokens[sub[i]], size=k, replace=False)
        toks = [f"tok{t:03d}" if rng.random() < 0.75 else f"tok{int(rng.integers(0, TOKENS)):03d}" for t in own]
        tokens.append(" ".join(dict.fromkeys(toks)))
    return pd.DataFrame({
        "item_id": np.arange(n_items) + 100_000,
        "category": np.char.mod("cat%02d", category),
        "subcategory": np.char.mod("sub%03d", sub),
        "brand": np.char.mod("brand%03d", brand),
        "price_bucket": price,
        "tokens": tokens,
    })


def generate_sessions(rows: int, seed: int, output: Path, gzip: bool = False, unknown_items: int = 0) -> dict[str, Any]:
    """Write `sessions.csv`, `items.csv` and `truth.json` into `output`; about `rows` view events.

    Example:
        >>> import tempfile
        >>> truth = generate_sessions(500, seed=0, output=Path(tempfile.mkdtemp()))
        >>> truth["cold_start_time"] > truth["start_time"]
        True
    """
    rng = np.random.default_rng(seed)
    n_items = max(200, rows // 20)
    items = _catalogue(rng, n_items)
    category = items["category"].str[3:].astype(int).to_numpy()
    sub = items["subcategory"].str[3:].astype(int).to_numpy()

    start = 1_700_000_000
    span = DAYS * 86_400
    cold_start = start + int((1 - COLD_PERIOD) * span)
    cold = rng.random(n_items) < COLD_SHARE
    release = np.where(cold, rng.integers(cold_start, start + span - 86_400, size=n_items), start)
    pop = np.empty(n_items)
    for c in range(CATEGORIES):
        m = np.flatnonzero(category == c)
        pop[m[rng.permutation(m.size)]] = zipf_probs(m.size, 1.0) if m.size else 0
    pop = np.where(cold, pop * COLD_BOOST, pop)
    cat_p = zipf_probs(CATEGORIES, 0.8)

    by_cat = [np.flatnonzero(category == c) for c in range(CATEGORIES)]
    by_sub = [np.flatnonzero(sub == s) for s in range(CATEGORIES * SUBCATS_PER_CATEGORY)]
    n_users = max(50, rows // 30)
    user_p = zipf_probs(n_users, 0.9)

    def pick(cands: np.ndarray, t: int) -> int:
        ok = cands[release[cands] <= t]
        if ok.size == 0:
            ok = np.flatnonzero(release <= t)
        w = pop[ok]
        return int(ok[np.searchsorted(np.cumsum(w) / w.sum(), rng.random(), side="right").clip(0, ok.size - 1)])

    sess, users, times, item_ids = [], [], [], []
    sid = 0
    while len(item_ids) < rows:
        t = int(start + rng.random() * (span - 3600))
        c = int(rng.choice(CATEGORIES, p=cat_p))
        u = int(rng.choice(n_users, p=user_p))
        length = min(2 + int(rng.geometric(0.25)) - 1, 30)
        prev = -1
        for _ in range(length):
            if prev >= 0 and rng.random() < SAME_SUBCATEGORY:
                i = pick(by_sub[sub[prev]], t)
            elif rng.random() < COHERENCE:
                i = pick(by_cat[c], t)
            else:
                i = pick(np.arange(n_items), t)
            sess.append(sid)
            users.append(u)
            times.append(t)
            item_ids.append(int(items["item_id"].iat[i]))
            prev = i
            t += int(rng.exponential(60)) + 1
        sid += 1
    df = pd.DataFrame({"session_id": sess, "user_id": users, "timestamp": times, "item_id": item_ids})
    df = df.sort_values(["timestamp", "session_id"], kind="stable").reset_index(drop=True)
    unknown: list[int] = []
    if unknown_items:
        pos = rng.choice(len(df), size=unknown_items, replace=False)
        unknown = (900_000 + np.arange(unknown_items)).tolist()
        df.loc[pos, "item_id"] = unknown
    s_path = write_table(df, output / "sessions.csv", ",", gzip)
    i_path = write_table(items, output / "items.csv", ",", gzip)
    cold_ids = items["item_id"][cold].astype(int).tolist()
    truth = {
        "kind": "sessions", "rows": int(len(df)), "seed": seed, "sessions": sid,
        "file": s_path.name, "items_file": i_path.name, "n_items": n_items,
        "start_time": start, "end_time": start + span, "cold_start_time": cold_start,
        "cold_items": cold_ids, "coherence": COHERENCE, "same_subcategory": SAME_SUBCATEGORY,
        "categories": CATEGORIES, "subcategories": CATEGORIES * SUBCATS_PER_CATEGORY,
        "unknown_items": unknown,
        "roles": {"session_id": "session_id", "user_id": "user_id", "timestamp": "timestamp", "item_id": "item_id"},
        "item_metadata": {"categorical": ["category", "subcategory", "brand", "price_bucket"], "multi_valued": ["tokens"]},
    }
    write_truth(output, truth)
    return truth

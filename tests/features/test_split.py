"""Train / validation / test splits: the random split is seeded, per row and blind to the label; encoded
files are never ordered by label; the split settings are checked with the config."""

from __future__ import annotations

import json
import math
import random

import pyarrow.parquet as pq
import pytest
from feature_stages import write_ingest_folder

from features.config import ColumnRoles, DatasetConfig, VocabConfig, resolve_split
from features.errors import ConfigError
from features.split import random_cuts, row_number_column, split_column
from features.vocab import build_vocab

pytestmark = pytest.mark.spark


def _duplicated_rows(n: int = 3000, seed: int = 1) -> list[dict]:
    """Only 2 x 2 distinct rows: c in {a, b}, y 0/1 (P(y=1) = 0.8 for a, 0.2 for b); no timestamp."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        c = rng.choice("ab")
        rows.append({"y": int(rng.random() < (0.8 if c == "a" else 0.2)), "c": c})
    return rows


def _labels_in_file_order(folder) -> list[int]:
    parts = sorted(folder.glob("part-*.parquet"))
    return [v for f in parts for v in pq.read_table(f, columns=["y"]).column("y").to_pylist()]


def test_random_split_label_means_agree_on_a_file_of_duplicate_rows(spark, tmp_path):
    """#18.3: the old hash split hashed the label with the row, so the 4 distinct rows went to 4 splits whole."""
    rows = _duplicated_rows()
    ing = write_ingest_folder(spark, rows, "y int, c string", tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", categorical=["c"]))
    cfg = VocabConfig(min_count=1, split_seed=5)
    assert resolve_split(ds, cfg) == "random"  # the default without a timestamp
    build_vocab({"ingest": ing}, tmp_path / "v", ds, cfg, spark)
    schema = json.loads((tmp_path / "v" / "schema.json").read_text())
    assert schema["cuts"] == {"method": "random", "validation_start": 0.8, "test_start": 0.9, "seed": 5, "key": "row"}
    p = sum(r["y"] for r in rows) / len(rows)
    for s, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        labels = _labels_in_file_order(tmp_path / "v" / "encoded" / s)
        n = len(labels)
        assert n == schema["rows"][s] and abs(n - share * len(rows)) < 4 * math.sqrt(share * (1 - share) * len(rows))
        assert abs(sum(labels) / n - p) < 4 * math.sqrt(p * (1 - p) / n), s
    assert sum(schema["rows"].values()) == len(rows)


def _split_by_id(spark, folder, cuts) -> dict[int, str]:
    df = spark.read.parquet(str(folder))
    got = df.select("id", split_column(cuts, key=row_number_column(df)).alias("s")).collect()
    return {r["id"]: r["s"] for r in got}


def test_same_seed_same_split_other_seed_another(spark, tmp_path):
    rows = [{"id": i, "y": i % 2, "u": f"u{i % 40}"} for i in range(2000)]
    spark.createDataFrame(rows, "id long, y int, u string").repartition(3, "u").write.parquet(str(tmp_path / "d"))
    a = _split_by_id(spark, tmp_path / "d", random_cuts(0.1, 0.2, seed=1))
    b = _split_by_id(spark, tmp_path / "d", random_cuts(0.1, 0.2, seed=1))
    c = _split_by_id(spark, tmp_path / "d", random_cuts(0.1, 0.2, seed=2))
    assert a == b and len(a) == 2000
    assert sum(a[i] != c[i] for i in a) > 400  # about 2 * 0.7 * 0.3 of the rows move
    assert abs(sum(s == "test" for s in a.values()) - 400) < 80
    # a split_key keeps rows that share it together (and still depends on the seed only)
    df = spark.read.parquet(str(tmp_path / "d"))
    keyed = df.select("u", split_column(random_cuts(0.1, 0.2, seed=1, key=["u"])).alias("s")).distinct().collect()
    assert len({r["u"] for r in keyed}) == 40 == len(keyed)


def test_split_settings_checked_against_the_roles():
    no_ts = DatasetConfig(path="a.csv", kind="ctr", roles=ColumnRoles(label="y", categorical=["c"]))
    with_ts = DatasetConfig(path="a.csv", kind="ctr", roles=ColumnRoles(label="y", timestamp="t"))
    assert resolve_split(with_ts, VocabConfig()) == "time" and resolve_split(with_ts, VocabConfig(split="random")) == "random"
    with pytest.raises(ConfigError, match="split is 'time' but dataset.roles.timestamp is not set"):
        resolve_split(no_ts, VocabConfig(split="time"))
    with pytest.raises(ConfigError, match="split_key lists the label 'y'"):
        resolve_split(no_ts, VocabConfig(split_key=["c", "y"]))


def test_run_config_gives_the_split_the_run_seed_and_rejects_a_bad_split(tmp_path):
    from jobs.config import parse_config

    base = {"seed": 11, "dataset": {"path": "a.csv", "kind": "ctr", "roles": {"label": "y"}}}
    assert parse_config(base, check_paths=False).features.vocab.split_seed == 11
    own = dict(base, features={"vocab": {"split_seed": 3}})
    assert parse_config(own, check_paths=False).features.vocab.split_seed == 3
    with pytest.raises(ConfigError, match=r"^x.yaml: features.vocab.split is 'time'"):
        parse_config(dict(base, features={"vocab": {"split": "time"}}), "x.yaml", check_paths=False)


@pytest.mark.parametrize("with_ts", [False, True])
def test_encoded_files_are_never_ordered_by_label(spark, tmp_path, with_ts):
    """#13.1: the encoded splits were sorted by (timestamp,) label, so training met all 0s then all 1s."""
    rows = [dict(r, t=1_700_000_000 + i // 500) for i, r in enumerate(_duplicated_rows(2000))]  # 500 rows per second
    ing = write_ingest_folder(spark, rows, "y int, c string, t long", tmp_path / "ingest")
    roles = ColumnRoles(label="y", categorical=["c"], timestamp="t" if with_ts else None)
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=roles)
    orders = []
    for k in range(2):
        build_vocab({"ingest": ing}, tmp_path / f"v{k}", ds, VocabConfig(min_count=1, split_seed=0), spark)
        orders.append(_labels_in_file_order(tmp_path / f"v{k}" / "encoded" / "train"))
    labels = orders[0]
    changes = sum(a != b for a, b in zip(labels, labels[1:]))
    p = sum(labels) / len(labels)
    assert changes > 0.8 * 2 * p * (1 - p) * len(labels)  # about what a shuffled file has; sorted: 1 (or 4)
    assert orders[0] == orders[1]  # the order is seeded, not arbitrary
    if with_ts:
        ts = [v for f in sorted((tmp_path / "v0" / "encoded" / "train").glob("part-*.parquet"))
              for v in pq.read_table(f, columns=["t"]).column("t").to_pylist()]
        assert ts == sorted(ts)


def test_write_by_split_of_a_range_partitioned_frame_equals_the_global_sort(spark, tmp_path):
    """`ranged=True` (the frame range-partitioned by split and order before costly columns are added, as the
    vocab stage does so that the range sampling skips the encoding) writes the same rows in the same order
    per split as a global sort."""
    from features.split import SPLITS, write_by_split

    base = spark.range(3000).selectExpr("id", "CAST(id % 7 AS LONG) AS ts", "xxhash64(id) AS _o",
                                        "CASE WHEN id % 10 < 7 THEN 'train' WHEN id % 10 < 9 THEN 'test' "
                                        "ELSE 'validation' END AS _split").repartition(5)
    order = ["ts", "_o"]
    plain = write_by_split(base.withColumn("v", base["id"] * 2), "_split", tmp_path / "a", order, drop=["_o"])
    ranged_df = base.repartitionByRange("_split", *order)
    ranged = write_by_split(ranged_df.withColumn("v", ranged_df["id"] * 2), "_split", tmp_path / "b", order,
                            drop=["_o"], ranged=True)
    assert plain == ranged == {"train": 2100, "validation": 300, "test": 600}
    for s in SPLITS:
        a = pq.read_table(tmp_path / "a" / s).to_pydict()
        b = pq.read_table(tmp_path / "b" / s).to_pydict()
        assert a == b and a["v"] == [i * 2 for i in a["id"]]
        assert a["ts"] == sorted(a["ts"])

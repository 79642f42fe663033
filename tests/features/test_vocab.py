"""Vocabularies: frequency order with ties by value, min_count, stable ids, unseen counting; ctr encoding."""

from __future__ import annotations

import json
import math

import pytest
from feature_stages import write_ingest_folder

from features.config import ColumnRoles, DatasetConfig, VocabConfig
from features.numeric import DenseTransform, apply_dense
from features.vocab import apply_vocab, assign_ids, build_vocab, unseen_counts, value_counts

pytestmark = pytest.mark.spark

# feature a: x x x y y z z w (z and y tie at 2: 'y' < 'z'); feature b: p p q
ROWS = [("x", "p"), ("x", "p"), ("x", "q"), ("y", None), ("y", None), ("z", None), ("z", None), ("w", None)]


def _ids(spark, min_count, max_size=None):
    df = spark.createDataFrame(ROWS, "a string, b string")
    vocab = assign_ids(value_counts(df, ["a", "b"]), min_count=min_count, max_size=max_size)
    return {(r["feature"], r["value"]): (r["id"], r["count"]) for r in vocab.collect()}


def test_ids_by_count_then_value_and_min_count(spark):
    assert _ids(spark, 2) == {("a", "x"): (2, 3), ("a", "y"): (3, 2), ("a", "z"): (4, 2), ("b", "p"): (2, 2)}
    assert _ids(spark, 1)[("a", "w")] == (5, 1) and _ids(spark, 1)[("b", "q")] == (3, 1)
    assert set(_ids(spark, 1, max_size=4)) == {("a", "x"), ("a", "y"), ("b", "p"), ("b", "q")}


def test_ids_are_stable_when_rows_come_in_another_order(spark):
    df = spark.createDataFrame(list(reversed(ROWS)), "a string, b string").repartition(3)
    vocab = assign_ids(value_counts(df, ["a", "b"]), min_count=2)
    assert {(r["feature"], r["value"]): (r["id"], r["count"]) for r in vocab.collect()} == _ids(spark, 2)


def test_apply_maps_missing_to_0_unseen_to_1_and_counts_them(spark):
    train = spark.createDataFrame(ROWS, "a string, b string")
    vocab = assign_ids(value_counts(train, ["a", "b"]), min_count=2)
    new = spark.createDataFrame([("x", "p"), ("new", "q"), (None, "zz"), ("w", None)], "a string, b string")
    enc = apply_vocab(new, vocab, ["a", "b"])
    assert sorted((r["a"], r["b"]) for r in enc.collect()) == sorted([(2, 2), (1, 1), (0, 1), (1, 0)])
    assert unseen_counts(enc, ["a", "b"]) == {"a": 2, "b": 2}


def test_ctr_encoding_splits_are_time_ordered_and_vocab_is_train_only(spark, ctr_ingested, tmp_path):
    ds = ctr_ingested["dataset"]
    out = tmp_path / "vocab"
    s = build_vocab({"ingest": ctr_ingested["dir"]}, out, ds, VocabConfig(min_count=2), spark)
    schema = json.loads((out / "schema.json").read_text())
    assert schema["rows"]["train"] + schema["rows"]["validation"] + schema["rows"]["test"] == 20_000 == s["rows_out"]
    assert abs(schema["rows"]["test"] - 2000) <= 50 and abs(schema["rows"]["validation"] - 2000) <= 50
    spans = {}
    for split in ("train", "validation", "test"):
        df = spark.read.parquet(str(out / "encoded" / split))
        r = df.agg({"ts": "min"}).first()[0], df.agg({"ts": "max"}).first()[0]
        spans[split] = r
    assert spans["train"][1] < spans["validation"][0] <= spans["validation"][1] < spans["test"][0]
    assert schema["cuts"]["test_start"] == spans["test"][0]
    # types and the dense transform
    test = spark.read.parquet(str(out / "encoded" / "test"))
    types = dict(test.dtypes)
    assert types["label"] == "int" and types["I1"] == "float" and types["C1"] == "bigint" and types["ts"] == "bigint"
    raw = spark.read.parquet(str(ctr_ingested["dir"] / "data")).where("I2 < 0 and I3 is null").orderBy("ts").first()
    enc = spark.read.parquet(str(out / "encoded" / "*")).where(f"ts = {raw['ts']}").collect()
    # per-column transforms chosen on train: I2 holds negatives (signed log, not clipped), a missing I3 is 0
    tf = {c: DenseTransform.from_dict(d) for c, d in schema["dense_transforms"].items()}
    assert tf["I2"].kind == "signed_log" and tf["I1"].kind == "log1p"
    want = {c: float(apply_dense([raw[c]], tf[c])[0]) for c in ("I1", "I2", "I3")}
    assert want["I3"] == 0.0 and want["I2"] < float(apply_dense([0.0], tf["I2"])[0])
    assert any(all(math.isclose(e[c], want[c], rel_tol=1e-6, abs_tol=1e-6) for c in want) for e in enc)
    # the vocabulary holds only train values: count of C2's top value equals its train count
    vocab = spark.read.parquet(str(out / "vocab"))
    top = vocab.where("feature = 'C2' and id = 2").first()
    train = spark.read.parquet(str(ctr_ingested["dir"] / "data")).where(f"ts < {schema['cuts']['validation_start']}")
    assert top["count"] == train.where(f"C2 = '{top['value']}'").count()
    assert vocab.where("count < 2").count() == 0
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes["C1"] == 2 + 8 and sizes["C7"] == 2 + 4 == schema["vocab_sizes"]["C7"]
    # unseen values are counted: high-cardinality features have many in the test period, C1 none
    assert schema["unseen"]["test"]["C1"] == 0 and schema["unseen"]["test"]["C26"] > 1000
    assert schema["unseen"]["test"]["C26"] == test.where("C26 = 1").count()


def test_rerun_gives_same_ids(spark, tmp_path):
    rows = [{"y": i % 2, "t": i, "c": "abcde"[i % 5] if i % 7 else None} for i in range(200)]
    ing = write_ingest_folder(spark, rows, "y int, t long, c string", tmp_path / "ingest")
    ds = DatasetConfig(path=tmp_path, kind="ctr", roles=ColumnRoles(label="y", timestamp="t", categorical=["c"]))
    ids = []
    for k in range(2):
        build_vocab({"ingest": ing}, tmp_path / f"v{k}", ds, VocabConfig(min_count=1, validation_share=0.0, test_share=0.2), spark)
        ids.append(sorted(tuple(r) for r in spark.read.parquet(str(tmp_path / f"v{k}" / "vocab")).collect()))
    assert ids[0] == ids[1]
    # the test period starts at the 80th percentile of t (t=159 here); the vocabulary counts only earlier rows
    cut = json.loads((tmp_path / "v0" / "schema.json").read_text())["cuts"]["test_start"]
    assert cut == 159
    expect = {}
    for i in range(int(cut)):
        if i % 7:
            expect["abcde"[i % 5]] = expect.get("abcde"[i % 5], 0) + 1
    order = sorted(expect, key=lambda v: (-expect[v], v))
    assert [(r[1], r[2], r[3]) for r in ids[0]] == sorted((v, 2 + order.index(v), expect[v]) for v in order)
    enc = spark.read.parquet(str(tmp_path / "v0" / "encoded" / "test"))
    assert enc.count() == 41 and enc.where("c = 0").count() == sum(1 for i in range(159, 200) if i % 7 == 0)


def test_every_feature_probes_one_shared_broadcast_and_ids_equal_the_per_feature_joins(spark):
    """#14: the single-valued features are encoded against ONE broadcast (keyed by the hash of
    (feature, value), matched exactly), so the Spark jobs do not grow with the feature count, and
    the ids equal those of one join per feature (the path taken when the vocabularies are too
    large to broadcast together) and a dict lookup."""
    from features.vocab import BROADCAST_MAX_ROWS

    feats = [f"c{k}" for k in range(6)]
    rows = [(i, *[None if (i + k) % 7 == 0 else f"v{(i * (k + 2)) % 9}" for k in range(6)]) for i in range(60)]
    df = spark.createDataFrame(rows, "i int, " + ", ".join(f"{f} string" for f in feats))
    vocab = assign_ids(value_counts(df.where("i < 40"), feats), min_count=2).localCheckpoint()
    sc = spark.sparkContext
    jobs = {}
    for n in (2, 6):
        sc.setJobGroup(f"shared-{n}", "encode")
        got = {r["i"]: r for r in apply_vocab(df, vocab, feats[:n]).collect()}
        jobs[n] = len(sc.statusTracker().getJobIdsForGroup(f"shared-{n}"))
    assert jobs[2] == jobs[6]
    apart = {r["i"]: r for r in apply_vocab(df, vocab, feats, {f: BROADCAST_MAX_ROWS for f in feats}).collect()}
    want = {(r["feature"], r["value"]): r["id"] for r in vocab.collect()}
    for i, *values in rows:
        expected = [0 if v is None else want.get((f, v), 1) for f, v in zip(feats, values)]
        assert [got[i][f] for f in feats] == [apart[i][f] for f in feats] == expected

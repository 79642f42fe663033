"""Session evaluation: ranks over the whole catalogue by slice, unscorable items last, the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.item_features import ItemFeatures
from models.popularity import Popularity
from models.sasrec import SASRec, SASRecConfig
from pipelines.sessions.data import SessionData
from pipelines.sessions.evaluate import category_table, comparison_table, evaluate_session_model, per_category, write_report


def world() -> SessionData:
    """6 items; training sees items 1..4 (item 1 six times, item 4 once); test targets: 1 (warm), 4 (sparse), 6 (cold)."""
    train = [np.array([1, 2, 1]), np.array([1, 3, 1]), np.array([2, 1, 1, 4]), np.array([1, 2])]
    test = [np.array([2, 1]), np.array([3, 4]), np.array([5, 6])]
    feats = ItemFeatures({"category": torch.tensor([0, 2, 2, 3, 3, 2, 2])})
    return SessionData([f"i{i}" for i in range(6)], feats, {"category": 4}, {"train": train, "validation": [], "test": test})


def test_popularity_ranks_and_slices_match_hand_computation():
    data = world()
    r = evaluate_session_model(Popularity(data.train_counts()), data, "test", ks=[1, 3])
    # counts: item1 6, item2 3, item3 1, item4 1, items 5, 6 none → target 1 rank 1; target 4 ties with 3 → rank 3 or 4;
    # target 6 ties with 5 at the bottom → rank 5 or 6
    assert r["overall"]["n"] == 3 and r["cold"]["n"] == 1 and r["sparse"]["n"] == 1
    assert r["cold"]["recall@3"] == 0.0
    assert r["overall"]["recall@1"] == pytest.approx(1 / 3)
    assert r["sparse"]["recall@3"] in (0.0, 1.0)
    assert r["embedding_bytes"] == 7 * 4 and r["catalogue_items"] == 6
    # top-1 item is always item 1 (category 2): right for targets 1 and 6, wrong for 4 (category 3)
    assert r["top1_category_acc"] == pytest.approx(2 / 3)
    # by the target's category: 2 → targets 1 (rank 1) and 6 (rank 5 or 6); 3 → target 4 (rank 3 or 4)
    cats = r["per_category"]
    assert set(cats) == {"2", "3"}                               # no value names in this world: the ids
    assert cats["2"] == {"n": 2, "recall@1": 0.5, "recall@3": 0.5, "top1_category_acc": 1.0}
    assert cats["3"]["n"] == 1 and cats["3"]["recall@1"] == 0.0 and cats["3"]["top1_category_acc"] == 0.0
    assert cats["3"]["recall@3"] == r["sparse"]["recall@3"]      # target 4 is the sparse one


def test_per_category_is_keyed_by_value_names_and_adds_head_accuracy():
    data = world()
    data.value_names = {"category": {2: "shoes", 3: "books"}}
    cats = per_category(data, "category", np.array([2, 3, 2, 2]), np.array([1, 25, 3, 40]),
                        np.array([True, False, True, False]), {"category": np.array([True, True, False, True])}, [20])
    assert cats == {"shoes": {"n": 3, "recall@20": 2 / 3, "top1_category_acc": 2 / 3, "head_category_acc": 2 / 3},
                    "books": {"n": 1, "recall@20": 0.0, "top1_category_acc": 0.0, "head_category_acc": 1.0}}
    md = category_table({"per_category": cats}, k=20)
    assert md.splitlines()[2] == "| shoes | 3 | 0.6667 | 0.6667 | 0.6667 |"
    assert data.value_name("category", 1) == "<unknown>" and data.value_name("category", 7) == "7"


def test_unscorable_cold_target_ranks_after_every_scorable_item():
    data = world()
    model = SASRec(SASRecConfig(catalogue_size=7, hidden=8, heads=2), data.train_counts().nonzero().squeeze(1))
    r = evaluate_session_model(model, data, "test", ks=[4, 5])
    assert r["cold"]["recall@4"] == 0.0                                  # 4 scorable items always come first
    assert r["embedding_bytes"] == 5 * 8 * 4


def test_report_has_one_row_per_model_and_a_plot(tmp_path):
    data = world()
    results = {"popularity": evaluate_session_model(Popularity(data.train_counts()), data, "test")}
    paths = write_report(results, tmp_path, title="toy")
    md = paths["report"].read_text()
    assert md.startswith("# toy") and "| popularity |" in md and md.count("\n| ") == 2
    assert json.loads(paths["metrics"].read_text())["popularity"]["overall"]["n"] == 3
    assert paths["plot"].stat().st_size > 1000
    assert comparison_table(results).count("\n") == 3


def test_a_sample_scores_a_seeded_subset_of_the_targets():
    """`sample`: the per-epoch validation scores a seeded random subset (the same one every epoch)."""
    data = world()
    pop = Popularity(data.train_counts())

    def ev(**kw) -> str:   # as JSON text: NaN figures (an empty slice) compare equal
        return json.dumps(evaluate_session_model(pop, data, "test", ks=[1], **kw), sort_keys=True)

    one = json.loads(ev(sample=1, seed=3))
    assert one["overall"]["n"] == 1 and ev(sample=1, seed=3) == ev(sample=1, seed=3)
    picked = [json.loads(ev(sample=1, seed=s))["warm"]["n"] for s in range(8)]
    assert set(picked) == {0, 1}                                  # different seeds pick different targets
    assert ev(sample=3) == ev() == ev(sample=None)                # a sample of all targets is all of them

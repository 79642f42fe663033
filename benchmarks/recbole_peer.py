"""RecBole itself on our leave-one-out protocol: the peer figure for GRU4Rec (or SASRec) on MovieLens-100K.

Runs in its own virtual environment (RecBole pins old colorlog / ray; the project's `.venv` stays as it is):

    python3 -m venv benchmarks/out/recbole-venv
    echo $PWD/.venv/lib/python3.11/site-packages > benchmarks/out/recbole-venv/lib/python3.11/site-packages/zz_project.pth
    benchmarks/out/recbole-venv/bin/pip install --no-deps recbole==1.2.1
    benchmarks/out/recbole-venv/bin/pip install colorlog colorama texttable tabulate thop tensorboard
    nice -n 19 benchmarks/out/recbole-venv/bin/python benchmarks/recbole_peer.py --model GRU4Rec --seed 0

(the `.pth` line lends RecBole the project's torch, numpy and pandas without installing into them). The data is
the `.inter` event log `benchmarks/session_models.py --datasets ml100k-loo` gives `sparserec sessions prepare`
(user, item, timestamp of every rating, file order), read by RecBole with its own settings for the model
(`GRU4Rec.yaml` / `SASRec.yaml`: full softmax cross-entropy, Adam 1e-3, batch 2048, max length 50) and the
protocol both sides use: time order, leave-one-out (`LS: valid_and_test`), full ranking, no filtering. Early
stopping as RecBole's default (`stopping_step` 10 on validation MRR@10) unless `--epochs` caps it. Writes
`benchmarks/out/recbole_peer/<model>_seed<seed>.json` (test Recall/NDCG@10/20, best epoch, settings).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_inter(folder: Path) -> Path:
    """ml-100k's ratings as RecBole's atomic `.inter` file (the columns the benchmark gives the importer)."""
    import pandas as pd

    ml = ROOT.parent / "shared" / "data" / "ml-100k"
    head = (ml / "u.data").read_text().split("\n", 1)[0]
    r = (pd.read_csv(ml / "u.data", sep="|") if "|" in head else
         pd.read_csv(ml / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"]))
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "ml-100k.inter"
    r.rename(columns={"user": "user_id:token", "item": "item_id:token", "timestamp": "timestamp:float"})[
        ["user_id:token", "item_id:token", "timestamp:float"]].to_csv(out, sep="\t", index=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="GRU4Rec", choices=["GRU4Rec", "SASRec"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=300, help="RecBole's default 300 (early stopping ends it sooner)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "recbole_peer")
    args = p.parse_args()

    import numpy as np
    import torch

    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):   # RecBole 1.2.1's compatibility_settings reads these NumPy 1 aliases
            setattr(np, old, new)
    from recbole.quick_start import run_recbole

    torch.set_num_threads(args.threads)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # RecBole writes log/ and log_tensorboard/ into the working directory
    data = args.out / "data"
    write_inter(data / "ml-100k")
    config = {
        "data_path": str(data), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "MAX_ITEM_LIST_LENGTH": 50, "loss_type": "CE", "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG", "MRR"], "topk": [10, 20], "valid_metric": "MRR@10",
        "epochs": args.epochs, "stopping_step": 10, "seed": args.seed, "reproducibility": True,
        "device": "cpu", "use_gpu": False, "show_progress": False, "save_dataset": False, "save_dataloaders": False,
        "checkpoint_dir": str(args.out / "saved"), "log_wandb": False,
    }
    t0 = time.perf_counter()
    result = run_recbole(model=args.model, dataset="ml-100k", config_dict=config)
    seconds = time.perf_counter() - t0
    test = {k: float(v) for k, v in result["test_result"].items()}
    record = {"model": args.model, "seed": args.seed, "recbole": __import__("recbole").__version__,
              "test": test, "best_valid": {k: float(v) for k, v in result["best_valid_result"].items()},
              "seconds": round(seconds, 1), "settings": {k: v for k, v in config.items() if k != "data_path"}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}_seed{args.seed}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record["test"]), f"{seconds:.0f}s")


if __name__ == "__main__":
    main()

"""DLRM / DCN-v2 vs. the logistic-regression baseline on generated CTR data with planted signal.

The generator plants informative ids, two informative numeric columns and an XOR pair (C7, C8)
that only a model with feature interactions can use. Same data, plan, batch size, epochs and seed
for every model (single-process mode of the training code); figures are test AUC / log loss.

    .venv/bin/python benchmarks/planted_signal.py [--rows 30000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pipelines")]

FEATURES = ["C1", "C2", "C3", "C4", "C5", "C7", "C8", "C10", "C11", "C14"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default="lr,dlrm,dcn")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from embeddings.config import EmbeddingsConfig
    from encoded_data import dense_plan, encode_generated_ctr
    from features.synthetic import generate
    from pipelines.runtime.config import TrainConfig
    from pipelines.ctr.trainer import train_stage

    work = Path(tempfile.mkdtemp(prefix="planted-"))
    generate("ctr", rows=args.rows, seed=3, output=work / "raw")
    schema = encode_generated_ctr(work / "raw", work / "vocab", features=FEATURES)
    (work / "plan").mkdir()
    dense_plan(schema, dim=16).save(work / "plan" / "embedding_plan.json")
    res = {}
    for name in args.models.split(","):
        cfg = TrainConfig(batch_size=512, epochs=args.epochs, checkpoint_every=10_000, early_stopping_patience=0)
        cfg.model.name = name
        cfg.ray.single_process = True
        out = work / f"train_{name}"
        out.mkdir()
        s = train_stage({"vocab": work / "vocab", "plan": work / "plan"}, out, cfg, EmbeddingsConfig(), seed=0, show_progress=False)
        res[name] = {k: s[k] for k in ("val_auc", "test_auc", "test_log_loss")}
    print(f"planted-signal CTR, {schema['rows']} rows per split, features {FEATURES}, {args.epochs} epochs")
    for name, r in res.items():
        print(f"  {name:>5}: test AUC {r['test_auc']:.4f}  log loss {r['test_log_loss']:.4f}  (validation AUC {r['val_auc']:.4f})")
    if "lr" in res:
        for name in res:
            if name != "lr":
                print(f"  {name} - lr test AUC: {res[name]['test_auc'] - res['lr']['test_auc']:+.4f}")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "planted_signal.json").write_text(json.dumps({"args": vars(args), "results": res}, indent=2) + "\n")


if __name__ == "__main__":
    main()

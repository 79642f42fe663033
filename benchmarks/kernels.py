"""Kernel benchmark: FBGEMM TBE training steps with and without DSL, and IntNBit inference lookups.

Measures, in one run and on the same ids:
1. dense FBGEMM TBE training step (forward + backward with the fused row-wise Adagrad update)
   vs. the same step under each DSL mode (`--modes exact,lazy,row`: `observe` + `after_step`; row
   on its compact table behind the id remap), the variants in lockstep
   (step t of each, back to back, on the same batch), each step timed alone:
   the per-step overhead without the prune/grow update, the update pass itself (the extra time of
   the step that runs it, with the gradient magnitudes of a real interval behind it), and both
   amortised at ΔT = 100 and 1000. Exact twice: gradient magnitude accumulated on every step,
   and on `--grad-steps` seeded steps spread over each interval (`DSLConfig.grad_steps`);
2. `--profile`: the DSL parts alone (unique rows + gradient accumulation hook, re-masking, the
   update pass split into prune selection, grow selection and applying it);
3. inference lookups of the IntNBit TBE in fp32 / fp16 / int8 / int4, and int8 with index
   remapping (the `pruned` export).

Prints ms and ratios, and writes benchmarks/out/kernels.json.

    .venv/bin/python benchmarks/kernels.py --small          # 100k x 64, batch 1024
    .venv/bin/python benchmarks/kernels.py                  # 1M x 64, batch 4096, 20 ids per bag (STACK.md)
    .venv/bin/python benchmarks/kernels.py --threads 1 --rounds 1 --repeats 2 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ids(rows: int, batch: int, bag: int, gen: torch.Generator) -> torch.Tensor:
    """Power-law ids (a few hot rows, a long tail), as in CTR logs."""
    return (torch.rand(batch * bag, generator=gen) ** 3 * rows).long().clamp_(max=rows - 1)


def _training_tbe(rows: int, dim: int, device: torch.device):
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)

    cpu = device.type == "cpu"
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(rows, dim, EmbeddingLocation.HOST if cpu else EmbeddingLocation.DEVICE,
          ComputeDevice.CPU if cpu else ComputeDevice.CUDA)],
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.01, eps=1e-8,
        device=device)
    tbe.init_embedding_weights_uniform(-0.05, 0.05)
    return tbe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(args, device: torch.device, batches, variants: dict[str, tuple[str | None, int | None]]) -> dict:
    """Steps of every variant in lockstep (step t of each variant back to back, on the same batch), so
    the machine's load drifts hit them alike. A variant is (DSL mode or None for the plain TBE,
    grad_steps). `row` trains a TBE of the budget's rows (+ the sentinel) behind an int32 remap of the
    ids, as `dsl.mode: row` does. Per variant: {"step": [mean ms of the steps without an
    update, per ΔT block after a warm-up block], "update": [extra ms of each update step over its
    block's mean], "last": stats of the last update}. Lazy's final exact phase (the last ΔT steps of a
    run) is not in these blocks: it costs what `exact` costs, for ΔT steps of the whole run."""
    from torchrec import KeyedJaggedTensor

    from embeddings.config import DSLConfig
    from embeddings.dsl import make_controller
    from embeddings.dsl.rows import apply_remap, initial_remap, row_budget

    steps = args.update_every * (args.repeats + 1)
    # cpu: the process's CPU time (all threads), which a busy machine's preemption does not inflate
    clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    runs = {}
    for label, (mode, grad_steps) in variants.items():
        remap = None
        if mode == "row":
            kept = row_budget(args.density, args.rows)
            tbe = _training_tbe(kept + 1, args.dim, device)
            remap = initial_remap(args.rows, kept).to(device)
        else:
            tbe = _training_tbe(args.rows, args.dim, device)
        dsl = None
        torch_ops = mode == "lazy-torch"  # lazy's update through torch ops (as on CUDA, or without numba)
        mode = "lazy" if torch_ops else mode
        if mode is not None:
            cfg = DSLConfig(enabled=True, mode=mode, density=args.density, update_every=args.update_every,
                            initial_exchange=args.initial_exchange, end_fraction=1.0, init="random", grad_steps=grad_steps)
            if mode == "row":
                from embeddings.dsl import RowDSLController

                dsl = RowDSLController(tbe, cfg, total_steps=steps * 2, remaps={"t0": remap})
            else:
                dsl = make_controller(tbe, cfg, total_steps=steps * 2)
                if torch_ops:
                    dsl.fused = False
        runs[label] = {"tbe": tbe, "dsl": dsl, "remap": remap, "block": [], "updates": [], "step": [], "update": [], "last": {}}
    lengths = torch.full((args.batch,), args.bag, dtype=torch.long, device=device)
    grad_out = torch.randn(args.batch, args.dim, device=device) * 1e-3
    # the batches' KJTs are built before the clock runs: a training pipeline has its batch as a KJT already
    kjts = [KeyedJaggedTensor(keys=["f"], values=ids, lengths=lengths, offsets=offsets) for ids, offsets in batches]
    for step in range(steps):
        ids, offsets = batches[step % len(batches)]
        kjt = kjts[step % len(batches)]
        # the order rotates every step: a variant that runs right after a heavy one (exact's
        # re-mask) finds the caches cold, which would bias a fixed order
        order = list(runs.values())
        for r in order[step % len(order):] + order[:step % len(order)]:
            tbe, dsl = r["tbe"], r["dsl"]
            _sync(device)
            t0 = clock()
            pooled = tbe(ids if r["remap"] is None else apply_remap(r["remap"], ids), offsets)
            if dsl is not None:
                dsl.observe(kjt, pooled)
            pooled.backward(grad_out)
            stats = dsl.after_step(step) if dsl is not None else {"updated": False}
            _sync(device)
            ms = (clock() - t0) * 1e3
            (r["updates"] if stats["updated"] else r["block"]).append(ms)
            if stats["updated"]:
                r["last"] = {"exchanged": stats["exchanged"], "active": stats["active"], "budget": stats["budget"],
                             "full_scans": getattr(dsl, "full_scans", None)}
            if (step + 1) % args.update_every == 0:
                if step >= args.update_every:  # the first block warms up
                    mean = statistics.fmean(r["block"])
                    r["step"].append(mean)
                    r["update"] += [u - mean for u in r["updates"]]
                r["block"], r["updates"] = [], []
    return {label: {k: r[k] for k in ("step", "update", "last")} for label, r in runs.items()}


def profile_dsl(args, device: torch.device, batches) -> dict[str, float]:
    """ms of each DSL part at this size: the hook (unique rows + gradient accumulation), re-masking
    the touched rows, and one update pass split into prune selection, grow selection and applying."""
    from torchrec import KeyedJaggedTensor

    from embeddings.dsl import controller as dsl_mod
    from embeddings.dsl import masks
    from embeddings.config import DSLConfig

    tbe = _training_tbe(args.rows, args.dim, device)
    cfg = DSLConfig(enabled=True, density=args.density, update_every=args.update_every,
                    initial_exchange=0.3, end_fraction=1.0, init="random")
    dsl = dsl_mod.DSLController(tbe, cfg, total_steps=10 * args.update_every)
    times: dict[str, list[float]] = {}

    def timed(label: str, fn):
        def run(*a, **kw):
            _sync(device)
            t0 = time.perf_counter()
            result = fn(*a, **kw)
            _sync(device)
            times.setdefault(label, []).append((time.perf_counter() - t0) * 1e3)
            return result
        return run

    accumulate = dsl_mod.accumulate
    dsl_mod.accumulate = timed("hook: unique rows + accumulate |grad|", accumulate)
    dsl._mask_touched_rows = timed("re-mask touched rows", dsl._mask_touched_rows)
    dsl._prune_and_grow = timed("update pass (whole)", dsl._prune_and_grow)
    originals = (masks._prune_positions, masks._grow_positions)
    masks._prune_positions = timed("  prune selection", masks._prune_positions)
    masks._grow_positions = timed("  grow selection", masks._grow_positions)
    lengths = torch.full((args.batch,), args.bag, dtype=torch.long, device=device)
    grad_out = torch.randn(args.batch, args.dim, device=device) * 1e-3
    try:
        for step in range(2 * args.update_every):
            ids, offsets = batches[step % len(batches)]
            pooled = timed("plain forward + backward (+ hook)", lambda: tbe(ids, offsets))()
            dsl.observe(KeyedJaggedTensor(keys=["f"], values=ids, lengths=lengths, offsets=offsets), pooled)
            timed("backward (incl. hook)", pooled.backward)(grad_out)
            dsl.after_step(step)
    finally:
        masks._prune_positions, masks._grow_positions = originals
        dsl_mod.accumulate = accumulate
    result = {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in times.items()}
    result["  applying (mask, weights, optimizer state)"] = (result["update pass (whole)"] - result["  prune selection"]
                                                          - result["  grow selection"])
    return result


def time_update_alone(args, device: torch.device) -> float:
    """ms of one `prune_and_grow` on a synthetic full table (30% of rows with gradients), as before."""
    from embeddings.dsl.masks import prune_and_grow, random_mask

    gen = torch.Generator().manual_seed(0)
    n_active = int(args.density * args.rows * args.dim)
    w = torch.randn(args.rows, args.dim, generator=gen).to(device)
    m = random_mask(args.rows, args.dim, n_active, gen, device)
    w *= m
    g = torch.rand(args.rows, args.dim, generator=gen).to(device) * (torch.rand(args.rows, 1, generator=gen).to(device) < 0.3)
    times = []
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        prune_and_grow({"t": w}, {"t": m}, {"t": g}, int(0.3 * n_active))
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _plain_inference_tbe(weight: torch.Tensor, serving: str, device: torch.device):
    """An IntNBit TBE over the whole table, no index remapping."""
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen

    from embeddings.compression.prune import _sparse_type, stored_rows

    loc = EmbeddingLocation.HOST if device.type == "cpu" else EmbeddingLocation.DEVICE
    rows, dim = weight.shape
    tbe = IntNBitTableBatchedEmbeddingBagsCodegen([("t", rows, dim, _sparse_type(serving), loc)],
                                                  device=device, output_dtype=SparseType.FP32)
    tbe.initialize_weights()
    tbe.assign_embedding_weights([tuple(x.to(device) if x is not None else None for x in stored_rows(weight, serving))])
    return tbe


def time_inference(args, device: torch.device, batches) -> dict[str, float]:
    """Median ms of one pooled lookup of the batch, per storage type (and int8 with remapping)."""
    from embeddings.compression.prune import PrunedTable, serving_tbe

    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(args.rows, args.dim, generator=gen) * 0.05
    results = {}
    cases = [("fp32", "fp32", None), ("fp16", "fp16", None), ("int8", "int8", None), ("int4", "int4", None)]
    # pruned export: half the rows dropped, remap array in front of an int8 table
    keep = torch.rand(args.rows, generator=gen) < 0.5
    remap = torch.full((args.rows,), -1, dtype=torch.int32)
    remap[keep] = torch.arange(int(keep.sum()), dtype=torch.int32)
    cases.append(("int8+remap (pruned 50%)", "int8", (weight[keep], remap)))
    for label, serving, pruned in cases:
        if pruned is None:
            tbe = _plain_inference_tbe(weight, serving, device)
        else:
            tbe = serving_tbe([PrunedTable("t", pruned[0], pruned[1], serving)], device=device)
        int_batches = [(i.int(), o.int()) for i, o in batches]
        ts = []
        for r in range(22):
            ids, offsets = int_batches[r % len(int_batches)]
            _sync(device)
            t0 = time.perf_counter()
            tbe(ids, offsets)
            _sync(device)
            if r >= 2:
                ts.append((time.perf_counter() - t0) * 1e3)
        results[label] = statistics.median(ts)
        del tbe
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--bag", type=int, default=20, help="ids per bag")
    p.add_argument("--density", type=float, default=0.2, help="DSL target density")
    p.add_argument("--update-every", type=int, default=100, help="DSL ΔT; one timed block = ΔT steps")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per variant and round")
    p.add_argument("--batches", type=int, default=8,
                   help="distinct batches cycled through (8: an interval looks up few distinct rows; ΔT: every step new ids, "
                        "as in a real epoch, which is what lazy's and row's updates pay for)")
    p.add_argument("--small", action="store_true", help="100k x 64, batch 1024, ΔT 50, 3 blocks: for a busy machine")
    p.add_argument("--no-update-alone", action="store_true", help="skip the standalone prune_and_grow timing")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--initial-exchange", type=float, default=None,
                   help="share of the budget exchanged per update (default: DSLConfig's, 0.1; the schedule is held "
                        "near it: end_fraction 1.0 over twice the timed steps)")
    p.add_argument("--grad-steps", type=int, default=10, help="grad_steps of the sampled exact variant (accumulating steps per interval; 0: none)")
    p.add_argument("--modes", default="exact,lazy,row",
                   help="comma list of DSL modes to time beside the plain TBE (lazy-torch: lazy with its update in torch ops, "
                        "as on CUDA or without numba)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of (dense, dsl, dsl sampled) in lockstep, fresh tables each")
    p.add_argument("--profile", action="store_true", help="also time each DSL part alone")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or the process's CPU time (robust to other processes on a busy machine)")
    p.add_argument("--no-inference", action="store_true", help="skip the inference lookups")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "kernels.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.initial_exchange is None:
        from embeddings.config import DSLConfig

        args.initial_exchange = DSLConfig().initial_exchange
    if args.small:
        args.rows, args.batch, args.update_every, args.repeats = 100_000, 1024, 50, 3
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gen = torch.Generator().manual_seed(0)
    offsets = torch.arange(0, args.batch * args.bag + 1, args.bag, dtype=torch.long)
    batches = [(_ids(args.rows, args.batch, args.bag, gen).to(device), offsets.to(device)) for _ in range(args.batches)]

    print(f"device={device} clock={args.clock} load={os.getloadavg()[0]:.1f} threads={torch.get_num_threads()} table={args.rows}x{args.dim} batch={args.batch} "
          f"bag={args.bag} batches={args.batches} density={args.density} exchange={args.initial_exchange} ΔT={args.update_every} blocks={args.repeats} rounds={args.rounds}", flush=True)
    # the variants run in lockstep, so drifts of the machine's load hit all of them alike
    variants: dict[str, tuple[str | None, int | None]] = {"dense": (None, None)}
    for mode in args.modes.split(","):
        variants[mode] = (mode, None)  # lazy and row: 10 sampled evidence steps per interval by default
        if mode == "exact" and args.grad_steps:
            variants[f"exact grad_steps={args.grad_steps}"] = ("exact", args.grad_steps)
    runs: dict[str, dict] = {k: {"step": [], "update": []} for k in variants}
    dsl_last: dict = {}
    for _ in range(args.rounds):
        for label, r in time_training(args, device, batches, variants).items():
            runs[label]["step"] += r["step"]
            runs[label]["update"] += r["update"]
            dsl_last = r["last"] or dsl_last
            scans = f"; full scans {r['last']['full_scans']}" if r["last"].get("full_scans") is not None else ""
            print(f"  {label}: steps {['%.2f' % x for x in r['step']]} ms; updates +{['%.0f' % x for x in r['update']]} ms{scans}", flush=True)
    step_ms = {k: statistics.median(v["step"]) for k, v in runs.items()}
    # the mean, not the median: lazy's update rebuilds its prune cache on some updates only
    update_ms = {k: statistics.fmean(v["update"]) for k, v in runs.items() if v["update"]}
    dense_ms = step_ms["dense"]
    standalone_ms = float("nan") if args.no_update_alone else time_update_alone(args, device)
    parts = profile_dsl(args, device, batches) if args.profile else {}
    infer = {} if args.no_inference else time_inference(args, device, batches)

    print("\ntraining step (forward + backward + fused row-wise Adagrad), ms per step (mean within a block of ΔT, median of blocks;"
          " the variants ran in lockstep)")
    print(f"  FBGEMM TBE dense                  {dense_ms:8.2f}")
    amortised: dict[str, dict[str, float]] = {}
    for label in variants:
        if label == "dense":
            continue
        ms, upd = step_ms[label], update_ms.get(label, 0.0)
        amortised[label] = {f"ΔT={dt}": (ms + upd / dt) / dense_ms for dt in (args.update_every, 100, 1000)}
        print(f"  FBGEMM TBE {label:22s} {ms:8.2f}   ratio {ms / dense_ms:5.3f} without the update "
              f"({100 * (ms / dense_ms - 1):+.1f}%)")
        print(f"      update pass {upd:8.1f} ms;  amortised ratio at ΔT=100: {amortised[label]['ΔT=100']:5.3f}, "
              f"ΔT=1000: {amortised[label]['ΔT=1000']:5.3f}")
    targets = {"lazy": 1.10, "lazy-torch": 1.10, "row": 1.05}
    for label, bound in targets.items():
        if label in amortised:
            got = amortised[label]["ΔT=100"]
            print(f"  target {label} <= {bound:.2f}x a plain step amortised at ΔT=100: {got:5.3f} "
                  f"{'MET' if got <= bound else 'NOT met'}")
    print(f"  prune_and_grow alone (synthetic table, as before) {standalone_ms:9.1f} ms")
    if dsl_last:
        print(f"  last update: exchanged {dsl_last['exchanged']}, active {dsl_last['active']} = budget {dsl_last['budget']}")
    if parts:
        print("\nDSL parts alone, ms (median)")
        for label, ms in parts.items():
            print(f"  {label:46s} {ms:9.2f}")
    if infer:
        print("\ninference lookup (IntNBit TBE, fp32 output), ms per batch, median")
        base = infer["fp32"]
        for label, ms in infer.items():
            print(f"  {label:24s} {ms:9.3f}   ratio vs fp32 {ms / base:5.3f}")
    result = {"device": str(device), "clock": args.clock, "load": os.getloadavg(), "threads": torch.get_num_threads(), "rows": args.rows, "dim": args.dim,
              "batch": args.batch, "bag": args.bag, "density": args.density, "initial_exchange": args.initial_exchange, "update_every": args.update_every,
              "grad_steps": args.grad_steps, "rounds": args.rounds, "batches": args.batches,
              "train_ms": {"step": step_ms, "update": update_ms, "blocks": runs, "prune_and_grow_alone": standalone_ms},
              "amortised_ratio": amortised, "dsl_parts_ms": parts, "inference_ms": infer}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return result


if __name__ == "__main__":
    main()

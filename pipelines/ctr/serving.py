"""A run's exported CTR model, ready to score encoded rows: eager PyTorch, or embeddings on FBGEMM
inference tables in a chosen precision.

`train/model/` holds `model.json` (model config, dense width, plan), `model.pt` (unsharded weights)
and `embeddings.pt` (the plan's serving artifact). Serving modes:

- `as-trained`: every table's trained rows in fp32 on FBGEMM `IntNBitTableBatchedEmbeddingBagsCodegen`
  (pruned remap kept): the numbers of the training-time evaluation;
- `fp32` / `fp16` / `int8` / `int4`: every table stored in that precision (FBGEMM's row-wise codec);
- `exported`: `embeddings.pt` as written, each table in the form its plan method exports;
- `eager`: the PyTorch model as trained (TorchRec EmbeddingBagCollection), the baseline of benchmarks.

In the precision-reduced modes (`fp16` / `int8` / `int4`) a DLRM's dense part is served by `ServedDLRM`
(`served_dlrm`: the same function without its big concatenations; float additions in another order,
about 1e-7 relative; in `int8` / `int4`, on a CPU with native bf16, the pairwise dots in bf16: about 4e-3 of
the largest dot); `as-trained`, `fp32`, `exported` and `eager` run the trained module as it is.
`Scorer` keeps freed heap memory in its process (`heap.keep_freed_memory`), so a batch's tensors reuse the
previous batch's pages instead of page-faulting in fresh ones.

A model without `PlanEmbeddings` (the `lr` baseline) is served eagerly whatever the mode.

Example::

    scorer = Scorer(Path("runs/r"), serving="int8")
    scorer(pa.table({"label": [1], "I1": [3.0], "C1": ["a"]})).column("score")
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import pyarrow as pa
import torch
from torch import nn

from embeddings.spec import EmbeddingPlan
from features.errors import UserError
from pipelines.ctr.batches import BatchSpec, batch_from_arrow
from pipelines.runtime.config import ModelConfig
from pipelines.ctr.model import build_ctr_model
from pipelines.ctr.row_encoder import RowEncoder
from pipelines.ctr.run_files import stage_json

SERVING_MODES = ("as-trained", "fp32", "fp16", "int8", "int4", "exported", "eager")
SCORE = "score"
REARRANGED = ("fp16", "int8", "int4")  # modes whose DLRM dense part is served by `ServedDLRM`
BF16_DOTS = ("int8", "int4")  # ... with its pairwise dots in bf16 where the CPU multiplies bf16 natively


@dataclass
class RunModel:
    """What `train/model/` says about the model: its config, dense width and plan."""

    folder: Path
    model: ModelConfig
    dense_in: int
    plan: EmbeddingPlan

    @classmethod
    def load(cls, folder: Path) -> "RunModel":
        folder = Path(folder)
        info = stage_json(folder, "model.json", also=("model.pt",), stage="train")
        return cls(folder, ModelConfig(**info["model"]), int(info["dense_in"]), EmbeddingPlan.from_json(json.dumps(info["plan"])))

    def eager(self) -> nn.Module:
        """The trained model, unsharded, eval mode (weights loaded with weights_only=True).

        Built on the meta device and given `model.pt`'s tensors (memory-mapped), so a GB of tables is neither
        allocated and randomly initialised first nor held twice; buffers that `model.pt` does not hold (e.g.
        TorchRec's `triu_indices`) come from the same model built with one-row tables."""
        state = torch.load(self.folder / "model.pt", weights_only=True, map_location="cpu", mmap=True)
        with torch.device("meta"):
            model = build_ctr_model(self.plan, self.dense_in, self.model)
        model.load_state_dict(state, assign=True)
        left = [n for n, t in model.named_buffers() if t.is_meta]
        if left:
            small = copy.deepcopy(self.plan)
            for t in small.tables:
                t.rows = min(t.rows, 2)
            ref = dict(build_ctr_model(small, self.dense_in, self.model).named_buffers())
            if any(n not in ref or ref[n].shape != model.get_buffer(n).shape for n in left):
                model = build_ctr_model(self.plan, self.dense_in, self.model)  # a buffer sized by the tables
                model.load_state_dict(state)
                return model.eval()
            for n in left:
                owner, _, name = n.rpartition(".")
                model.get_submodule(owner).register_buffer(name, ref[n].clone(), persistent=False)
        return model.eval()

    def bf16_dots(self, serving: str) -> bool:
        """Whether `serving` computes a DLRM's pairwise dots in bf16 (int8 / int4 on a CPU with native bf16)."""
        from pipelines.ctr.served_dlrm import native_bf16

        return serving in BF16_DOTS and self.model.name == "dlrm" and native_bf16()

    def backend(self, serving: str) -> str:
        """What serves the embeddings under `serving` (for summaries), without building the model."""
        if serving == "eager":
            return "eager PyTorch (TorchRec EmbeddingBagCollection)"
        if self.model.name == "lr":
            return "eager PyTorch (the lr baseline holds no plan embeddings to serve)"
        if serving == "exported":
            return "FBGEMM IntNBit TBE, embeddings.pt as exported"
        dots = ", DLRM dots in bf16" if self.bf16_dots(serving) else ""
        return f"FBGEMM IntNBit TBE, every table {'fp32' if serving == 'as-trained' else serving}{dots}"

    def served(self, serving: str) -> nn.Module:
        """The model with its embeddings served as `serving` (see the module doc)."""
        if serving not in SERVING_MODES:
            raise UserError(f"--serving {serving}: unknown; use one of {', '.join(SERVING_MODES)}")
        model = self.eager()
        if serving == "eager" or self.model.name == "lr":
            return model
        from embeddings.export import load_exported

        if serving == "exported":
            model.sparse = load_exported(self.folder / "embeddings.pt")
        else:
            from embeddings.serving import served_embeddings

            model.sparse = served_embeddings(model, serving)
        if serving in REARRANGED and type(model).__name__ == "DLRM":
            from pipelines.ctr.served_dlrm import ServedDLRM

            return ServedDLRM(model, bf16_dots=self.bf16_dots(serving))
        return model.eval()


class Scorer:
    """Typed raw rows (an Arrow table in the ingest layout) → the same rows' keys, score and label.

    A callable class, so Ray Data runs it as an actor pool (`map_batches(Scorer, ...)`): each actor
    loads the model and the vocabularies once."""

    def __init__(self, run: str | Path, serving: str = "as-trained", keep: list[str] | None = None,
                 label: str | None = None, threads: int | None = None) -> None:
        from pipelines.ctr.heap import keep_freed_memory

        run = Path(run)
        if threads:
            torch.set_num_threads(threads)
        keep_freed_memory()
        self.info = RunModel.load(run / "train" / "model")
        self.model, self.backend = self.info.served(serving), self.info.backend(serving)
        self.encoder = RowEncoder.load(run / "vocab")
        if label is not None:
            self.encoder.label = label
        self.features = [f for t in self.info.plan.tables for f in t.features]  # as batch_spec feeds training
        self.spec = BatchSpec(label=self.encoder.label, dense=list(self.encoder.dense), sparse=self.features,
                              rows={f: t.rows for t in self.info.plan.tables for f in t.features}, source="predict input")
        self.keep = list(keep or [])

    def scores(self, rows: pa.Table, batch_size: int | None = None) -> np.ndarray:
        """Predicted probabilities (float32) of `rows`, in order: encoded all at once (each distinct value
        looked up once, fixed per-column costs paid once), then scored `batch_size` rows at a time (all at once
        by default), so the model sees the same batches whatever the encoding chunk."""
        enc = self.encoder.encode(rows, self.features)
        if self.spec.label not in enc.column_names:
            enc = enc.append_column(self.spec.label, pa.array(np.zeros(enc.num_rows, dtype=np.int32)))
        out = np.empty(enc.num_rows, dtype=np.float32)
        step = batch_size or max(enc.num_rows, 1)
        with torch.inference_mode():
            for at in range(0, enc.num_rows, step):
                batch = batch_from_arrow(enc.slice(at, step), self.spec)
                out[at:at + batch.dense.shape[0]] = torch.sigmoid(self.model(batch.dense, batch.sparse)).numpy()
        return out

    def __call__(self, rows: pa.Table, batch_size: int | None = None) -> pa.Table:
        cols = {c: rows.column(c) for c in self.keep if c in rows.column_names}
        cols[SCORE] = pa.array(self.scores(rows, batch_size))
        if self.encoder.label in rows.column_names:
            cols[self.encoder.label] = rows.column(self.encoder.label)
        return pa.table(cols)

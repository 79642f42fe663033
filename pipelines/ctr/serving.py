"""A run's exported CTR model, ready to score encoded rows: eager PyTorch, or embeddings on FBGEMM
inference tables in a chosen precision.

`train/model/` holds `model.json` (model config, dense width, plan), `model.pt` (unsharded weights)
and `embeddings.pt` (the plan's serving artifact). Serving modes:

- `as-trained`: every table's trained rows in fp32 on FBGEMM `IntNBitTableBatchedEmbeddingBagsCodegen`
  (pruned remap kept): the numbers of the training-time evaluation;
- `fp32` / `fp16` / `int8` / `int4`: every table stored in that precision (FBGEMM's row-wise codec);
- `exported`: `embeddings.pt` as written, each table in the form its plan method exports;
- `eager`: the PyTorch model as trained (TorchRec EmbeddingBagCollection), the baseline of benchmarks.

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

    def backend(self, serving: str) -> str:
        """What serves the embeddings under `serving` (for summaries), without building the model."""
        if serving == "eager":
            return "eager PyTorch (TorchRec EmbeddingBagCollection)"
        if self.model.name == "lr":
            return "eager PyTorch (the lr baseline holds no plan embeddings to serve)"
        if serving == "exported":
            return "FBGEMM IntNBit TBE, embeddings.pt as exported"
        return f"FBGEMM IntNBit TBE, every table {'fp32' if serving == 'as-trained' else serving}"

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
        return model.eval()


class Scorer:
    """Typed raw rows (an Arrow table in the ingest layout) → the same rows' keys, score and label.

    A callable class, so Ray Data runs it as an actor pool (`map_batches(Scorer, ...)`): each actor
    loads the model and the vocabularies once."""

    def __init__(self, run: str | Path, serving: str = "as-trained", keep: list[str] | None = None,
                 label: str | None = None, threads: int | None = None) -> None:
        run = Path(run)
        if threads:
            torch.set_num_threads(threads)
        self.info = RunModel.load(run / "train" / "model")
        self.model, self.backend = self.info.served(serving), self.info.backend(serving)
        self.encoder = RowEncoder.load(run / "vocab")
        if label is not None:
            self.encoder.label = label
        self.features = [f for t in self.info.plan.tables for f in t.features]  # as batch_spec feeds training
        self.spec = BatchSpec(label=self.encoder.label, dense=list(self.encoder.dense), sparse=self.features,
                              rows={f: t.rows for t in self.info.plan.tables for f in t.features}, source="predict input")
        self.keep = list(keep or [])

    def scores(self, rows: pa.Table) -> np.ndarray:
        """Predicted probabilities (float32) of `rows`, in order."""
        enc = self.encoder.encode(rows, self.features)
        if self.spec.label not in enc.column_names:
            enc = enc.append_column(self.spec.label, pa.array(np.zeros(enc.num_rows, dtype=np.int32)))
        batch = batch_from_arrow(enc, self.spec)
        with torch.inference_mode():
            return torch.sigmoid(self.model(batch.dense, batch.sparse)).numpy()

    def __call__(self, rows: pa.Table) -> pa.Table:
        cols = {c: rows.column(c) for c in self.keep if c in rows.column_names}
        cols[SCORE] = pa.array(self.scores(rows))
        if self.encoder.label in rows.column_names:
            cols[self.encoder.label] = rows.column(self.encoder.label)
        return pa.table(cols)


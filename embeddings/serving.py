"""Served embeddings of a trained model in a chosen storage precision, on FBGEMM inference tables.

`export.py` writes the artifact a plan asks for (each table in its method's serving form). For
offline evaluation one also wants the same trained rows served another way: all fp32 (what the
training-time evaluation computed: `as-trained`), or every table fp16 / int8 / int4 (FBGEMM's
row-wise codec), to see what a precision costs. `served_embeddings` builds that module from the
trained `PlanEmbeddings` (unsharded, e.g. loaded from `model/model.pt`): the same per-method
export rows, id transforms, combiners and pruned index remapping as `export_embeddings`, only the
stored precision differs.

Example:
    >>> from embeddings.spec import EmbeddingPlan, TableSpec
    >>> from embeddings.tables import build_embeddings
    >>> emb = build_embeddings(EmbeddingPlan([TableSpec("t", ["a"], rows=10, dim=4)]))
    >>> served = served_embeddings(emb, "int8")
    >>> [tbe.__class__.__name__ for tbe in served.tbes]
    ['IntNBitTableBatchedEmbeddingBagsCodegen']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from embeddings.compression.base import SERVING_BITS
from embeddings.errors import ExportError
from embeddings.export import ExportedEmbeddings, _encode, find_plan_embeddings, trained_weights
from embeddings.tables import physical_key

AS_TRAINED = "as-trained"  # every table fp32: the numbers of the training-time evaluation
PRECISIONS = tuple(SERVING_BITS)  # fp32, fp16, int8, int4


def served_embeddings(model: nn.Module, serving: str) -> ExportedEmbeddings:
    """The `PlanEmbeddings` in `model` served with every physical table stored as `serving`
    (`as-trained` = fp32), lookups on FBGEMM's `IntNBitTableBatchedEmbeddingBagsCodegen`."""
    precision = "fp32" if serving == AS_TRAINED else serving
    if precision not in SERVING_BITS:
        raise ExportError(f"serving '{serving}' is unknown; use {AS_TRAINED}, {', '.join(PRECISIONS)}")
    emb = find_plan_embeddings(model)
    weights = trained_weights(emb)
    tables: dict[str, dict[str, Any]] = {}
    combiners: dict[str, dict[str, Any]] = {}
    remaps = getattr(emb, "row_remaps", None)
    for e in emb._entries:
        names = [physical_key(e.spec.name, p.suffix) for p in e.physical]
        remap = getattr(remaps, e.spec.name, None) if remaps is not None else None
        if remap is not None:  # row-mode DSL: the compact table as it trained, and its remap
            exported = e.method.export_row_table(e.spec, weights[names[0]], remap)
        else:
            exported = e.method.export_tables(e.spec, [weights[n] for n in names])
        for n, t in zip(names, exported):
            if precision == "int4" and t.weight.shape[1] % 4:
                raise ExportError(f"table '{e.spec.name}': int4 serving needs dims divisible by 4, '{n}' has "
                                  f"{t.weight.shape[1]}; serve it as int8 or fp16")
            t.serving = precision
            tables[n] = _encode(t)
        keys = set(e.method.serving_combiner(e.spec).state_dict())
        combiners[e.spec.name] = {k: v.detach().cpu().clone() for k, v in emb.combiners[e.spec.name].state_dict().items()
                                  if k in keys}
    return ExportedEmbeddings(emb.plan, tables, combiners)

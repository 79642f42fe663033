"""Pruned export of DSL tables: index remapping, compact precision, FBGEMM IntNBit serving, bytes."""

from __future__ import annotations

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from embeddings.compression import get_method
from embeddings.compression.prune import export_dsl_tables, prune_rows, serving_tbe
from embeddings.compression.quantize import quantization_error_bound
from embeddings.config import DSLConfig
from embeddings.dsl import DSLController
from embeddings.errors import ExportError, MethodParamsError
from embeddings.spec import TableSpec

ROWS, DIM = 200, 8


@pytest.fixture(scope="module")
def trained():
    """A two-table EBC trained 40 steps under DSL (density 0.1, frequency-aware init on Zipf counts)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ebc = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name="ta", num_embeddings=ROWS, embedding_dim=DIM, feature_names=["a"]),
        EmbeddingBagConfig(name="tb", num_embeddings=ROWS // 2, embedding_dim=DIM, feature_names=["b"])])
    counts = {"ta": 10_000.0 / torch.arange(1, ROWS + 1) ** 1.2 * (torch.arange(ROWS) < 120),
              "tb": 5_000.0 / torch.arange(1, ROWS // 2 + 1) ** 1.2 * (torch.arange(ROWS // 2) < 60)}
    dsl = DSLController(ebc, DSLConfig(enabled=True, density=0.1, update_every=10, init="frequency"),
                        total_steps=40, frequencies=counts)
    opt = torch.optim.SGD(ebc.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(2)
    for step in range(40):
        a = torch.multinomial(counts["ta"] + 1e-3, 64, replacement=True, generator=gen)
        b = torch.multinomial(counts["tb"] + 1e-3, 64, replacement=True, generator=gen)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([a, b]),
                                                  lengths=torch.ones(128, dtype=torch.long))
        pooled = ebc(kjt)
        dsl.observe(kjt, pooled)
        (pooled.values() - 1.0).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        dsl.after_step(step)
    torch.set_num_threads(before)
    weights = {n: ebc.embedding_bags[n].weight.detach().clone() for n in ("ta", "tb")}
    return weights, {n: m.clone() for n, m in dsl.masks.items()}


@pytest.mark.parametrize("serving", ["fp32", "fp16", "int8", "int4"])
def test_pruned_export_serves_the_masked_table_within_the_precision_bound(trained, serving):
    weights, masks = trained
    tables = export_dsl_tables(weights, masks, serving=serving)
    tbe = serving_tbe(tables)
    # every id once per bag, for both tables (features in table order)
    ids = {n: torch.arange(w.shape[0]) for n, w in weights.items()}
    batch = ROWS
    indices, lengths = [], []
    for n in ("ta", "tb"):
        rows = weights[n].shape[0]
        indices.append(ids[n])
        lengths.append(torch.cat([torch.ones(rows, dtype=torch.int32), torch.zeros(batch - rows, dtype=torch.int32)]))
    offsets = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cat(lengths).cumsum(0).int()])
    out = tbe(torch.cat(indices).int(), offsets)
    for i, n in enumerate(("ta", "tb")):
        rows = weights[n].shape[0]
        expected = weights[n] * masks[n]
        served = out[:rows, i * DIM:(i + 1) * DIM]
        bound = quantization_error_bound(expected, serving)
        err = (served - expected).abs().max(dim=1).values
        assert torch.all(err <= bound + 1e-6), (n, serving, float((err - bound).max()))
        empty = ~masks[n].any(1)
        assert int(empty.sum()) > 0
        assert torch.all(served[empty] == 0)
        assert torch.all(tables[i].index_remapping[empty] == -1)
        assert tables[i].kept_rows == int((~empty).sum())


def test_pruned_export_has_fewer_bytes_and_reports_them(trained):
    weights, masks = trained
    for serving, max_ratio in (("fp32", 1.0), ("fp16", 0.75), ("int8", 0.5), ("int4", 0.4)):
        for t in export_dsl_tables(weights, masks, serving=serving):
            rows, dim = t.rows, t.dim
            assert t.bytes_before == rows * dim * 4
            per_row = {"fp32": dim * 4, "fp16": dim * 2, "int8": dim + 4, "int4": dim // 2 + 4}[serving]
            assert t.bytes_after == t.kept_rows * per_row + rows * 4
            assert t.bytes_after < max_ratio * t.bytes_before, (t.name, serving, t.summary())


def test_multi_id_bags_pool_over_kept_and_pruned_rows():
    w = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0], [0.0, 0.0]])
    t = prune_rows("t", w, serving="fp32")
    assert t.index_remapping.tolist() == [0, -1, 1, -1]
    tbe = serving_tbe([t])
    out = tbe(torch.tensor([0, 1, 2, 1, 3], dtype=torch.int32), torch.tensor([0, 3, 5], dtype=torch.int32))
    assert out.tolist() == [[4.0, 1.0], [0.0, 0.0]]


def test_registered_pruned_method_exports_with_remapping_and_checks_params():
    method = get_method("pruned")
    spec = TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned", params={"serving": "int8"})
    method.check(spec)
    assert method.spec_bytes(spec) == 4 * (4 + 4) + 4 * 4
    w = torch.tensor([[0.0] * 4, [1.0, 2.0, 3.0, 4.0], [0.0] * 4, [0.5] * 4])
    (exported,) = method.export_tables(spec, [w])
    assert exported.serving == "int8"
    assert exported.index_remapping.tolist() == [-1, 0, -1, 1]
    assert torch.equal(exported.weight, w[[1, 3]])
    with pytest.raises(MethodParamsError, match="serving 'int3' is unknown"):
        method.check(TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned", params={"serving": "int3"}))
    with pytest.raises(MethodParamsError, match="no parameter"):
        method.check(TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned", params={"bits": 8}))


def test_bad_inputs_give_one_line_errors():
    with pytest.raises(ExportError, match="mask is \\(2, 2\\) but weights are \\(3, 2\\)"):
        prune_rows("t", torch.ones(3, 2), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ExportError, match="NaN"):
        prune_rows("t", torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(MethodParamsError, match="int4 rows need dim divisible by 4"):
        prune_rows("t", torch.ones(3, 6), serving="int4")


def test_pruned_method_through_the_project_export_round_trip(tmp_path, trained):
    from embeddings.export import export_embeddings, load_exported
    from embeddings.spec import EmbeddingPlan
    from embeddings.tables import build_embeddings

    weights, masks = trained
    plan = EmbeddingPlan([TableSpec("ta", ["a"], rows=ROWS, dim=DIM, method="pruned", params={"serving": "int8"}),
                          TableSpec("tb", ["b"], rows=ROWS // 2, dim=DIM)])
    emb = build_embeddings(plan).eval()
    with torch.no_grad():  # the DSL-trained, masked table
        emb.ebc.embedding_bags["ta"].weight.copy_(weights["ta"] * masks["ta"])
    report = export_embeddings(emb, tmp_path / "emb.pt")
    served = load_exported(tmp_path / "emb.pt")
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([torch.arange(ROWS), torch.arange(ROWS // 2)]),
                                              lengths=torch.cat([torch.ones(ROWS, dtype=torch.long),
                                                                 torch.ones(ROWS // 2, dtype=torch.long),
                                                                 torch.zeros(ROWS // 2, dtype=torch.long)]))
    expected, got = emb(kjt)["a"], served(kjt)["a"]
    bound = quantization_error_bound(weights["ta"] * masks["ta"], "int8")
    assert torch.all((expected - got).abs().max(dim=1).values <= bound + 1e-6)
    empty = ~masks["ta"].any(1)
    assert torch.all(got[empty] == 0)
    row = {t["table"]: t for t in report["tables"]}["ta"]
    kept = int((~empty).sum())
    assert row["bytes_before"] == ROWS * DIM * 4 and row["bytes_after"] < row["bytes_before"]
    assert row["bytes_after"] >= kept * (DIM + 4)


def test_compact_rows_picks_the_smallest_form_within_the_error_bound(trained):
    from embeddings.compression.base import row_bytes
    from embeddings.compression.prune import compact_rows

    weights, masks = trained
    w = weights["ta"] * masks["ta"]
    for max_error in (0.0, 0.01, 0.05, 0.2):
        t = compact_rows("ta", w, masks["ta"], max_error=max_error)
        served = torch.zeros_like(w)
        kept = (t.index_remapping >= 0).nonzero().squeeze(1)
        served[kept] = serving_tbe([t])(kept.int(), torch.arange(kept.numel() + 1, dtype=torch.int32))
        err = float((w - served).norm() / w.norm())
        assert err <= max_error + 1e-6, (max_error, t.serving, err)
        dropped = int((t.index_remapping < 0).sum())
        assert t.bytes_after == t.kept_rows * row_bytes(DIM, t.serving) + ROWS * 4
        assert dropped >= int((w.abs().sum(1) == 0).sum())  # rows with no active weight are always dropped
    lossless = compact_rows("ta", w, max_error=0.0)
    assert lossless.serving == "fp32" and lossless.kept_rows == int((w.abs().sum(1) > 0).sum())
    loose = compact_rows("ta", w, max_error=0.2)
    assert loose.serving == "int4" and loose.bytes_after < prune_rows("ta", w, serving="int4").bytes_after
    # one row is all the error budget allows to drop: the smallest-norm one, exactly
    rows = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.001], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
    t = compact_rows("x", rows, max_error=0.001, servings=("fp32",))
    assert t.index_remapping.tolist() == [0, -1, 1, 2]


def test_pruned_max_error_param_exports_compact_rows_and_is_checked():
    method = get_method("pruned")
    spec = TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned", params={"max_error": 0.05})
    method.check(spec)
    w = torch.tensor([[0.0] * 4, [1.0, 2.0, 3.0, 4.0], [0.0] * 4, [0.5, -0.5, 0.25, 1.0]])
    (exported,) = method.export_tables(spec, [w])
    assert exported.serving == "int4" and exported.index_remapping.tolist() == [-1, 0, -1, 1]  # 0.9% error
    (tight,) = method.export_tables(TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned",
                                              params={"max_error": 0.005}), [w])
    assert tight.serving == "fp16"  # int4 is over 0.5%; int8 rows of dim 4 (+ scale, bias) are as large as fp16
    with pytest.raises(MethodParamsError, match="params.max_error is 2"):
        method.check(TableSpec(name="t", features=["f"], rows=4, dim=4, method="pruned", params={"max_error": 2}))

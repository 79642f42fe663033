"""Export to FBGEMM IntNBit TBE form and back: same outputs within each method's error bound."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.compression.quantize import quantization_error_bound
from embeddings.errors import ExportError
from embeddings.export import export_embeddings, load_exported, trained_weights
from embeddings.spec import EmbeddingPlan, TableSpec
from embeddings.tables import build_embeddings, physical_key

PLAN = EmbeddingPlan([
    TableSpec("t_dense", ["d"], rows=30, dim=8),
    TableSpec("t_hash", ["h"], rows=500, dim=8, method="hashing", params={"buckets": 17}),
    TableSpec("t_qr", ["q"], rows=200, dim=8, method="qr", params={"m": 16}),
    TableSpec("t_qr_add", ["qa"], rows=200, dim=8, method="qr", params={"m": 16, "op": "add", "serving": "int8"}),
    TableSpec("t_mix", ["m"], rows=40, dim=8, method="mixed_dim", params={"stored_dim": 4}),
    TableSpec("t_fp16", ["f16"], rows=40, dim=8, method="fp16", pooling="mean"),
    TableSpec("t_int8", ["i8"], rows=40, dim=8, method="int8", params={"qat": True}),
    TableSpec("t_int4", ["i4"], rows=40, dim=8, method="int4"),
])
ROWS = {"d": 30, "h": 500, "q": 200, "qa": 200, "m": 40, "f16": 40, "i8": 40, "i4": 40}


def _batch(seed: int, max_len: int = 3) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    vals, lens = [], []
    for f, n in ROWS.items():
        for _ in range(6):
            k = int(torch.randint(0, max_len + 1, (1,), generator=g))
            vals.append(torch.randint(0, n, (k,), generator=g))
            lens.append(k)
    return KeyedJaggedTensor.from_lengths_sync(keys=list(ROWS), values=torch.cat(vals), lengths=torch.tensor(lens))


def test_export_round_trip_within_quantization_bounds(tmp_path):
    torch.manual_seed(0)
    emb = build_embeddings(PLAN).eval()
    report = export_embeddings(emb, tmp_path / "emb.pt")
    served = load_exported(tmp_path / "emb.pt")
    art = torch.load(tmp_path / "emb.pt", weights_only=True)  # tensors, strings, numbers only
    assert art["tables"]["t_int8"]["weight"].dtype == torch.uint8 and art["tables"]["t_int8"]["weight"].shape == (40, 8)
    assert art["tables"]["t_int4"]["weight"].shape == (40, 4)
    w = trained_weights(emb)
    bags = _batch(1, max_len=3)
    a, b = emb(bags), served(bags)
    assert a.keys() == b.keys() == list(ROWS)
    for f in ("d", "h", "q", "m"):
        assert torch.allclose(a[f], b[f], atol=1e-6), f   # fp32 tables served as they were trained
    lengths = bags.to_dict()
    for f, table, serving in (("f16", "t_fp16", "fp16"), ("i8", "t_int8", "int8"), ("i4", "t_int4", "int4")):
        bound = quantization_error_bound(w[table], serving).max()
        max_bag = int(lengths[f].lengths().max())
        err = (a[f] - b[f]).abs().max()
        assert err <= bound * max(max_bag, 1) + 1e-6, (f, err, bound)
        if serving != "fp16":
            assert err > 0  # really quantized
    # qr with op=add served int8: an id's vector is its quotient row plus its remainder row
    bound = sum(quantization_error_bound(w[physical_key("t_qr_add", s)], "int8").max() for s in ("q", "r"))
    err = (a["qa"] - b["qa"]).abs().max()
    assert 0 < err <= bound * int(lengths["qa"].lengths().max()) + 1e-6
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["t_int8"]["bytes_before"] == 40 * 8 * 4 and by_table["t_int8"]["bytes_after"] == 40 * (8 + 4)
    assert by_table["t_int4"]["bytes_after"] == 40 * (4 + 4)
    assert by_table["t_fp16"]["bytes_after"] == 40 * 16
    assert by_table["t_mix"]["bytes_after"] == 40 * 4 * 4 + 8 * 4 * 4
    assert report["bytes_after"] == sum(t["bytes_after"] for t in report["tables"]) < report["bytes_before"]


def test_single_id_bags_int8_served_equals_fake_quant_training(tmp_path):
    torch.manual_seed(0)
    emb = build_embeddings(PLAN)
    export_embeddings(emb, tmp_path / "emb.pt")
    served = load_exported(tmp_path / "emb.pt")
    bags = _batch(2, max_len=1)
    emb.train()  # QAT fake-quant active: what training saw is what serving gives
    assert torch.allclose(emb(bags)["i8"], served(bags)["i8"], atol=1e-6)


def test_bad_artifacts_give_one_line_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        load_exported(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ExportError, match="not a readable embeddings artifact"):
        load_exported(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match="re-export"):
        load_exported(tmp_path / "other.pt")
    with pytest.raises(ExportError, match="holds no PlanEmbeddings"):
        export_embeddings(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_cli_inspect_shows_the_stored_bytes(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    torch.manual_seed(0)
    report = export_embeddings(build_embeddings(PLAN), tmp_path / "emb.pt")
    res = CliRunner().invoke(app, ["embeddings", "inspect", str(tmp_path / "emb.pt")])
    assert res.exit_code == 0, res.output
    assert f"total {report['bytes_after']:,} bytes" in res.output
    res = CliRunner().invoke(app, ["embeddings", "methods"])
    assert res.exit_code == 0 and "qr" in res.output and "hashing" in res.output


def test_qr_and_hashing_served_int8_equal_dequantized_reference(tmp_path):
    from embeddings.compression import get_method

    torch.manual_seed(0)
    plan = EmbeddingPlan([TableSpec("t_q", ["q"], rows=200, dim=8, method="qr", params={"m": 16, "serving": "int8"}),
                          TableSpec("t_h", ["h"], rows=500, dim=8, method="hashing", params={"buckets": 17, "serving": "int4"})])
    assert get_method("qr").spec_bytes(plan.tables[0]) == (13 + 16) * (8 + 4)
    assert get_method("hashing").spec_bytes(plan.tables[1]) == 17 * (4 + 4)
    emb = build_embeddings(plan).eval()
    export_embeddings(emb, tmp_path / "emb.pt")
    served = load_exported(tmp_path / "emb.pt")
    w = trained_weights(emb)

    def deq(x, bits):
        return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(
            torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(x, bits), bits)

    q, r, h = deq(w["t_q__q"], 8), deq(w["t_q__r"], 8), deq(w["t_h"], 4)
    ids = torch.tensor([0, 15, 16, 199])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["q", "h"], values=torch.cat([ids, ids]), lengths=torch.ones(8, dtype=torch.int32))
    out = served(kjt)
    assert torch.allclose(out["q"], q[ids // 16] * r[ids % 16], atol=1e-6)
    hb = ((ids * 2654435761) & 0xFFFFFFFF) % 17
    assert torch.allclose(out["h"], h[hb], atol=1e-6)
    with pytest.raises(Exception, match="params.serving='int3' is unknown"):
        build_embeddings(EmbeddingPlan([TableSpec("t", ["f"], rows=50, dim=8, method="hashing", params={"buckets": 5, "serving": "int3"})]))

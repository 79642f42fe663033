"""Arrow → Batch: KJT layout, multi-hot bags, exact re-batching, and the id/column guards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.ctr.batches import BatchSpec, batch_from_arrow, parquet_batches, rebatch
from pipelines.runtime.errors import EncodedDataError, IdOutOfRangeError

SPEC = BatchSpec(label="y", dense=["d1", "d2"], sparse=["a", "tags"], rows={"a": 10, "tags": 5}, source="enc/train")


def _table(n: int = 3) -> pa.Table:
    return pa.table({"y": pa.array([1, 0, 1][:n], pa.int32()), "d1": pa.array([0.5, 1.0, 2.0][:n], pa.float32()),
                     "d2": pa.array([3.0, 4.0, 5.0][:n], pa.float32()), "a": pa.array([2, 9, 0][:n], pa.int64()),
                     "tags": pa.array([[1, 2], [], [4]][:n], pa.list_(pa.int64()))})


def test_single_and_multi_hot_columns_become_one_kjt():
    b = batch_from_arrow(_table(), SPEC)
    assert b.dense.tolist() == [[0.5, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert b.labels.tolist() == [1.0, 0.0, 1.0]
    assert b.sparse.keys() == ["a", "tags"]
    assert b.sparse.values().tolist() == [2, 9, 0, 1, 2, 4]
    assert b.sparse.lengths().tolist() == [1, 1, 1, 2, 0, 1]
    assert b.sparse["tags"].to_dense()[0].tolist() == [1, 2]


def test_id_outside_its_table_names_feature_id_and_size():
    t = _table().set_column(3, "a", pa.array([2, 10, 0], pa.int64()))
    with pytest.raises(IdOutOfRangeError, match=r"enc/train: feature 'a' has id 10 but its table has 10 rows"):
        batch_from_arrow(t, SPEC)


def test_missing_column_and_null_ids_are_one_line_errors():
    with pytest.raises(EncodedDataError, match="column 'tags' is missing"):
        batch_from_arrow(_table().drop_columns(["tags"]), SPEC)
    t = _table().set_column(3, "a", pa.array([2, None, 0], pa.int64()))
    with pytest.raises(EncodedDataError, match="column 'a' has 1 null ids"):
        batch_from_arrow(t, SPEC)


def test_rebatch_gives_exact_sizes_across_pieces(tmp_path):
    pieces = [pa.table({"x": list(range(i, i + k))}) for i, k in ((0, 3), (3, 5), (8, 2))]
    sizes = [t.num_rows for t in rebatch(pieces, 4)]
    assert sizes == [4, 4, 2]
    assert [t.num_rows for t in rebatch(pieces, 4, drop_last=True)] == [4, 4]
    firsts = [t.column("x")[0].as_py() for t in rebatch(pieces, 4)]
    assert firsts == [0, 4, 8]


def test_parquet_batches_stream_files_in_order_and_skip(tmp_path):
    for k in range(3):
        pq.write_table(_table(), tmp_path / f"part-{k}.parquet")
    batches = list(parquet_batches(tmp_path, SPEC, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 1]
    skipped = list(parquet_batches(tmp_path, SPEC, batch_size=4, skip=1))
    assert torch.equal(skipped[0].dense, batches[1].dense)


def test_row_ranges_split_a_folder_into_equal_rank_slices(tmp_path):
    from pipelines.ctr.batches import row_range_batches

    for k in range(3):
        pq.write_table(_table(), tmp_path / f"part-{k}.parquet")        # 9 rows: d1 = .5, 1, 2 repeated
    first = [b.dense[:, 0].tolist() for b in row_range_batches(tmp_path, SPEC, 2, 0, 4)]
    second = [b.dense[:, 0].tolist() for b in row_range_batches(tmp_path, SPEC, 2, 4, 8)]
    assert first == [[0.5, 1.0], [2.0, 0.5]] and second == [[1.0, 2.0], [0.5, 1.0]]


def _two_files(tmp_path):
    """Two Parquet files (name order a, b) of 3 and 4 rows; `y` numbers the rows 0..6."""
    folder = tmp_path / "train"
    folder.mkdir()
    for name, ys in (("a.parquet", [0, 1, 2]), ("b.parquet", [3, 4, 5, 6])):
        n = len(ys)
        pq.write_table(pa.table({"y": pa.array(ys, pa.int32()), "d1": pa.array([1.0] * n, pa.float32()),
                                 "d2": pa.array([2.0] * n, pa.float32()), "a": pa.array([1] * n, pa.int64()),
                                 "tags": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
                                 "unused": pa.array([f"{y:04d}" * 250 for y in ys])}), folder / name)
    (folder / "_SUCCESS").write_text("")
    return folder


def test_equal_shares_are_consecutive_row_ranges_in_file_order_without_the_remainder(tmp_path):
    from pipelines.ctr.batches import equal_shares

    folder = _two_files(tmp_path)
    shares = equal_shares(folder, SPEC.columns, 2)
    assert [t.column("y").to_pylist() for t in shares] == [[0, 1, 2], [3, 4, 5]]   # row 6 dropped, as equal=True
    assert shares[0].schema.names == SPEC.columns                                    # only the model's columns
    assert [t.column("y").to_pylist() for t in equal_shares(folder, SPEC.columns, 3)] == [[0, 1], [2, 3], [4, 5]]


def test_uncompressed_bytes_counts_only_the_wanted_columns_from_the_footers(tmp_path):
    from pipelines.ctr.batches import uncompressed_bytes

    folder = _two_files(tmp_path)
    model = uncompressed_bytes(folder, SPEC.columns)
    everything = uncompressed_bytes(folder, [*SPEC.columns, "unused"])
    assert 0 < model < 1000                       # 7 rows of a few numbers
    assert everything - model > 7 * 1000          # seven distinct 1000-character strings (uncompressed) are the rest
    expected = sum(pq.ParquetFile(f).metadata.row_group(0).column(c).total_uncompressed_size
                   for f in (folder / "a.parquet", folder / "b.parquet") for c in range(6))
    assert everything == expected


def test_table_batches_yield_every_row_of_a_share_once_in_order_and_resume_after_skipped_batches():
    from pipelines.ctr.batches import table_batches

    n = 7
    share = pa.table({"y": pa.array(range(n), pa.int32()), "d1": pa.array([float(i) for i in range(n)], pa.float32()),
                      "d2": pa.array([2.0] * n, pa.float32()), "a": pa.array([i % 10 for i in range(n)], pa.int64()),
                      "tags": pa.array([[i % 5] for i in range(n)], pa.list_(pa.int64()))})
    epoch = [b.labels.tolist() for b in table_batches(share, SPEC, 3, drop_last=True)]
    assert epoch == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]                   # row 6 left out: no short batch
    again = [b.labels.tolist() for b in table_batches(share, SPEC, 3, drop_last=True)]
    assert again == epoch                                                # every epoch: the same rows, once each
    assert [b.labels.tolist() for b in table_batches(share, SPEC, 3)][-1] == [6.0]
    resumed = [b.labels.tolist() for b in table_batches(share, SPEC, 3, drop_last=True, skip=1)]
    assert resumed == [[3.0, 4.0, 5.0]]                                  # a restart mid-epoch goes on after batch 1
    b = next(table_batches(share, SPEC, 3, skip=1))
    assert b.dense[:, 0].tolist() == [3.0, 4.0, 5.0] and b.sparse["a"].values().tolist() == [3, 4, 5]
    assert b.sparse["tags"].values().tolist() == [3, 4, 0]
    chunked = pa.concat_tables([share.slice(0, 4), share.slice(4)])      # a slice that spans two chunks
    assert [x.labels.tolist() for x in table_batches(chunked, SPEC, 3, drop_last=True)] == epoch

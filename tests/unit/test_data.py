"""Data loading: every --data form, streaming, and a clear error for each way data can be wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeq.data import DataSource, load_data
from edgeq.data.arrays import LoadedMember, NpyStream, open_npz
from edgeq.errors import DataError


def _model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    """Identity per input: enough for validation and feeds."""
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _, _ in inputs]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


IMAGE_MODEL = _model([("input", TensorProto.FLOAT, ["batch", 3, 8, 8])])
TEXT_MODEL = _model([("input_ids", TensorProto.INT64, ["batch", "seq"]), ("mask", TensorProto.INT64, ["batch", "seq"])])


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


def _gather(source: DataSource, name: str, batch_size: int | None = None) -> np.ndarray:
    return np.concatenate([b[name] for b in source.batches(batch_size)])


def test_uncompressed_npz_streams_rows_and_reiterates(tmp_path: Path) -> None:
    x = _images(11)
    np.savez(tmp_path / "d.npz", input=x)
    members = open_npz(tmp_path / "d.npz")
    assert isinstance(members["input"], NpyStream)  # read row by row, never loaded whole
    source = load_data(tmp_path / "d.npz", IMAGE_MODEL, batch_size=4)
    assert (source.num_samples, source.batch_size, source.input_names) == (11, 4, ["input"])
    assert [b["input"].shape[0] for b in source] == [4, 4, 3]
    np.testing.assert_array_equal(_gather(source, "input"), x)
    np.testing.assert_array_equal(_gather(source, "input"), x)  # second pass restarts at sample 0
    np.testing.assert_array_equal(_gather(source, "input", batch_size=5), x)
    assert members["input"].read(3, 5).flags.c_contiguous


def test_compressed_npz_loads_member(tmp_path: Path) -> None:
    x = _images(6)
    np.savez_compressed(tmp_path / "d.npz", input=x)
    assert isinstance(open_npz(tmp_path / "d.npz")["input"], LoadedMember)
    np.testing.assert_array_equal(_gather(load_data(tmp_path / "d.npz", IMAGE_MODEL, batch_size=4), "input"), x)


def test_samples_limit_and_excess(tmp_path: Path) -> None:
    x = _images(10)
    np.savez(tmp_path / "d.npz", input=x)
    source = load_data(tmp_path / "d.npz", IMAGE_MODEL, samples=7, batch_size=3)
    np.testing.assert_array_equal(_gather(source, "input"), x[:7])
    more = load_data(tmp_path / "d.npz", IMAGE_MODEL, samples=50)
    assert more.num_samples == 10 and any("10 samples" in n for n in more.notes)


def test_folder_of_npz_and_per_sample_npy(tmp_path: Path) -> None:
    x = _images(9)
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    np.savez(chunks / "part0.npz", input=x[:4])
    np.savez(chunks / "part1.npz", input=x[4:])
    np.testing.assert_array_equal(_gather(load_data(chunks, IMAGE_MODEL, batch_size=3), "input"), x)
    singles = tmp_path / "singles"
    singles.mkdir()
    for i, sample in enumerate(x):
        np.save(singles / f"sample_{i:03d}.npy", sample)  # one sample each, no sample axis
    np.testing.assert_array_equal(_gather(load_data(singles, IMAGE_MODEL, batch_size=4), "input"), x)


def test_folder_of_named_npy_for_two_inputs(tmp_path: Path) -> None:
    ids = np.arange(40, dtype=np.int64).reshape(5, 8)
    np.save(tmp_path / "input_ids.npy", ids)
    np.save(tmp_path / "mask.npy", np.ones_like(ids))
    source = load_data(tmp_path, TEXT_MODEL, batch_size=2)
    np.testing.assert_array_equal(_gather(source, "input_ids"), ids)
    assert sorted(next(iter(source))) == ["input_ids", "mask"]


def test_fixed_batch_one_feeds_single_samples(tmp_path: Path) -> None:
    model = _model([("input", TensorProto.FLOAT, [1, 3, 8, 8])])
    source = load_data({"input": _images(5)}, model, batch_size=8)
    assert source.batch_size == 1 and [b["input"].shape for b in source] == [(1, 3, 8, 8)] * 5
    assert any("fixed batch dimension of 1" in n for n in source.notes)


def test_unbatched_model_gets_one_sample_without_axis() -> None:
    model = _model([("input", TensorProto.FLOAT, [3, 8, 8])])
    source = load_data({"input": _images(3)}, model, batch_size=8)
    shapes = [b["input"].shape for b in source]
    assert shapes == [(3, 8, 8)] * 3 and source.batch_size == 1


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"input": _images(2), "extra": _images(2)}, "'extra' is not an input of the model"),
        ({}, "holds no arrays"),
        ({"input": _images(2).astype(np.float64)}, "input 'input' is float64, the model expects float32"),
        ({"input": _images(2)[:, 0]}, "has rank 3"),
        ({"input": np.zeros((2, 3, 8, 9), np.float32)}, "size 9 on axis 3"),
        ({"input": np.zeros((0, 3, 8, 8), np.float32)}, "holds no samples"),
    ],
)
def test_image_data_errors(arrays: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=None) as info:
        load_data(arrays, IMAGE_MODEL)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_input_and_mismatched_counts_and_symbols() -> None:
    ids = np.zeros((4, 8), np.int64)
    with pytest.raises(DataError, match="no data for model input 'mask'"):
        load_data({"input_ids": ids}, TEXT_MODEL)
    with pytest.raises(DataError, match="input 'mask' has 3 samples but 'input_ids' has 4"):
        load_data({"input_ids": ids, "mask": ids[:3]}, TEXT_MODEL)
    with pytest.raises(DataError, match="seq=6 but input 'input_ids' has seq=8"):
        load_data({"input_ids": ids, "mask": ids[:, :6]}, TEXT_MODEL)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_nonfinite_named_with_sample_index(tmp_path: Path, bad: float, word: str) -> None:
    x = _images(30)
    x[23, 1, 2, 3] = bad
    np.savez(tmp_path / "d.npz", input=x)
    with pytest.raises(DataError) as info:
        load_data(tmp_path / "d.npz", IMAGE_MODEL)
    message = str(info.value)
    assert "input 'input' sample 23 contains " + word in message and "d.npz" in message


def test_bad_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_data(tmp_path / "missing.npz", IMAGE_MODEL)
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not a valid \.npz"):
        load_data(tmp_path / "bad.npz", IMAGE_MODEL)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unknown data format"):
        load_data(tmp_path / "x.csv", IMAGE_MODEL)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \.npy or \.npz files"):
        load_data(empty, IMAGE_MODEL)


def test_truncated_npz_member_is_reported(tmp_path: Path) -> None:
    x = _images(8)
    np.savez(tmp_path / "d.npz", input=x)
    data = (tmp_path / "d.npz").read_bytes()
    # Keep the zip directory readable but cut the payload: rewrite a stored member shorter.
    with zipfile.ZipFile(tmp_path / "short.npz", "w", zipfile.ZIP_STORED) as archive:
        with zipfile.ZipFile(tmp_path / "d.npz") as original:
            payload = original.read("input.npy")
        archive.writestr("input.npy", payload[: len(payload) // 2])
    assert data  # original untouched
    with pytest.raises(DataError, match="truncated"):
        list(load_data(tmp_path / "short.npz", IMAGE_MODEL))


def test_reads_are_bounded_by_batch_and_scan_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole array is never read at once: validation scans in chunks, iteration by batch."""
    import edgeq.data.source as source_module

    x = _images(40)
    np.savez(tmp_path / "d.npz", input=x)
    row_bytes = x[0].nbytes
    monkeypatch.setattr(source_module, "_SCAN_BYTES", 6 * row_bytes)
    sizes: list[int] = []
    original = NpyStream._read_bytes

    def spy(self: NpyStream, offset: int, out: np.ndarray) -> None:
        sizes.append(out.nbytes)
        original(self, offset, out)

    monkeypatch.setattr(NpyStream, "_read_bytes", spy)
    source = load_data(tmp_path / "d.npz", IMAGE_MODEL, batch_size=4)
    assert sizes and max(sizes) == 6 * row_bytes  # the NaN/Inf scan
    sizes.clear()
    np.testing.assert_array_equal(_gather(source, "input"), x)
    assert max(sizes) == 4 * row_bytes and len(sizes) == 10


def test_samples_that_carry_their_own_batch_axis_are_not_called_unbatched(tmp_path):
    """Data [8, 1, 16] for a model input [1, 16]: the model has a batch axis; the note must not deny it."""
    import onnx
    from onnx import helper, numpy_helper

    from edgeq.data import load_data

    w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    np.savez(tmp_path / "d.npz", x=np.ones((8, 1, 16), np.float32))
    source = load_data(tmp_path / "d.npz", model, batch_size=4)
    assert source.notes and not any("no batch axis" in n for n in source.notes)
    assert any("[8, 1, 16]" in n and "one sample per inference" in n for n in source.notes)
    assert next(b["x"].shape for b in source.batches(4)) == (1, 16)

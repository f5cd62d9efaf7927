"""CalibrationTable JSON round trip and the TensorRT calibration cache, exact to the bit."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgeq.calibrate.table import CalibrationTable, TensorRange, load_calibration
from edgeq.calibrate.trt_cache import parse_cache, read_cache, scale_hex
from edgeq.errors import ConfigError


def _table(method: str = "minmax") -> CalibrationTable:
    def entry(name: str, lo: float, hi: float, entropy: float) -> TensorRange:
        thresholds = {"minmax": max(-lo, hi), "percentile": entropy * 1.1, "entropy": entropy, "mse": entropy * 0.9}
        return TensorRange(name, lo, hi, thresholds[method], thresholds, count=10)

    return CalibrationTable(
        model_sha256="ab" * 32,
        method=method,
        samples=64,
        tensors={
            "asym": entry("asym", -10.0, 2.0, 6.0),
            "relu:0": entry("relu:0", 0.0, 1.27, 1.0),
            "unit": entry("unit", -1.0, 1.0, 0.5),
        },
    )


def test_json_round_trip(tmp_path: Path) -> None:
    table = _table("entropy")
    path = table.save(tmp_path / "calib.json")
    loaded = CalibrationTable.load(path)
    assert loaded == table
    assert "channel_absmax" not in path.read_text() and "channel_absmean" not in path.read_text()
    assert loaded.amax("asym") == 6.0 and loaded.amax("asym", "minmax") == 10.0 and loaded.amax("asym", "mse") == 5.4
    with pytest.raises(ConfigError, match="tensor 'nope' is not in the calibration table"):
        loaded.amax("nope")


def test_reader_rejects_other_documents(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"_type": "edgeq.Other", "_version": 1, "_data": {}}')
    with pytest.raises(ConfigError, match=r"expected a edgeq.CalibrationTable document"):
        CalibrationTable.load(tmp_path / "x.json")
    text = _table().to_json().replace('"_version": 1', '"_version": 99')
    (tmp_path / "new.json").write_text(text)
    with pytest.raises(ConfigError, match="newer"):
        CalibrationTable.load(tmp_path / "new.json")


def test_trt_cache_exact_scales(tmp_path: Path) -> None:
    path = _table("minmax").write_trt_cache(tmp_path / "calib.cache")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    # Asymmetric (-10, 2): amax = max(|min|, |max|) = 10, scale = 10/127 as big-endian float32.
    assert lines[1] == "asym: " + struct.pack(">f", 10.0 / 127.0).hex()
    assert lines[1] == "asym: 3da14285"
    assert lines[2] == "relu:0: 3c23d70a"  # 1.27 / 127 = 0.01
    assert lines[3] == "unit: " + struct.pack(">f", 1.0 / 127.0).hex() == "unit: 3c010204"
    scales = CalibrationTable.read_trt_cache(path)
    assert scales == {name: struct.unpack(">f", struct.pack(">f", a / 127.0))[0] for name, a in (("asym", 10.0), ("relu:0", 1.27), ("unit", 1.0))}


def test_trt_cache_header_options_and_method(tmp_path: Path) -> None:
    table = _table("minmax")
    path = table.write_trt_cache(tmp_path / "c.cache", trt_version="100300", algorithm="MinMaxCalibration", method="entropy")
    version, algorithm, scales = read_cache(path)
    assert (version, algorithm) == ("100300", "MinMaxCalibration")
    assert scales["asym"] == pytest.approx(6.0 / 127, rel=1e-7)
    with pytest.raises(ConfigError, match="algorithm"):
        table.write_trt_cache(tmp_path / "d.cache", algorithm="Magic")
    assert not (tmp_path / "d.cache").exists()


@pytest.mark.parametrize(
    "text, fragment",
    [("", "empty"), ("hello\n", "TRT-<version>-<Algorithm>"), ("TRT-8502-EntropyCalibration2\nx: 12\n", ":2: expected")],
)
def test_bad_cache_files(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_cache(text)
    assert fragment in str(info.value)


def test_scale_hex_known_values() -> None:
    assert scale_hex(1.0) == "3f800000" and scale_hex(0.5) == "3f000000" and scale_hex(-2.0) == "c0000000"


def test_table_rejects_nonfinite_and_unknown_method() -> None:
    with pytest.raises(ConfigError, match="non-finite"):
        CalibrationTable("0" * 64, "minmax", 1, {"t": TensorRange("t", float("-inf"), 1.0, 1.0)})
    with pytest.raises(ConfigError, match="calibration method"):
        CalibrationTable("0" * 64, "kl", 1, {})


def test_old_tables_with_channel_statistics_still_load(tmp_path: Path) -> None:
    """Tables written before the unused per-channel lists were dropped read as before."""
    data = _table("entropy").to_dict()
    data["_data"]["tensors"]["asym"]["channel_absmax"] = [1.0, 2.5]
    data["_data"]["tensors"]["asym"]["channel_absmean"] = [0.5, 1.0]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert load_calibration(tmp_path / "old.json") == _table("entropy")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "calibration table not found"),
        ("{not json", "not valid JSON"),
        ('{"_type": "edgeq.QuantizationSummary", "_version": 1, "_data": {}}', "expected a edgeq.CalibrationTable"),
        ("NEWER", "newer than this edgeq"),
        ("NAN", "non-finite range"),
        ("KL", "calibration method 'kl'"),
        ('{"_type": "edgeq.CalibrationTable", "_version": 1, "_data": {"method": "minmax"}}', "invalid edgeq.CalibrationTable"),
    ],
)
def test_load_calibration_names_the_file_in_one_line(tmp_path: Path, text: str | None, fragment: str) -> None:
    path = tmp_path / "table.json"
    good = _table().to_json()
    if text == "NEWER":
        text = good.replace('"_version": 1', '"_version": 99')
    elif text == "NAN":
        text = good.replace('"max": 2.0', '"max": NaN')
    elif text == "KL":
        text = good.replace('"method": "minmax"', '"method": "kl"')
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_calibration(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message


def test_load_calibration_refuses_another_model(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not the calibrated model")
    path = _table().save(tmp_path / "calib.json")
    with pytest.raises(ConfigError, match=r"calib\.json: calibration table was made for model sha256 abababababab"):
        load_calibration(path, model)


def test_thresholds_for_names_the_missing_tensor() -> None:
    table = _table("entropy")
    assert table.thresholds_for("asym", "input of conv") == {"minmax": 10.0, **table["asym"].thresholds}
    with pytest.raises(ConfigError, match=r"no range for tensor 'gone' \(input of conv\)"):
        table.thresholds_for("gone", "input of conv")

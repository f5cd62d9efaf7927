"""Power sources on fixture trees of real board layouts, tegrastats formats, RAPL wraparound, NVML."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import edgeq_runtime
import pytest
import sysfs_boards as boards
from edgeq_runtime.power import SensorUnavailable, discover
from edgeq_runtime.power.ina238 import Ina238Source
from edgeq_runtime.power.ina3221_hwmon import Ina3221HwmonSource
from edgeq_runtime.power.ina3221_iio import Ina3221IioSource
from edgeq_runtime.power.nvml import NvmlSource
from edgeq_runtime.power.rapl import RaplSource
from edgeq_runtime.power.tegrastats import TegrastatsSource, parse_tegrastats_line


def test_orin_nano_hwmon(tmp_path):
    boards.orin_nano(tmp_path)
    source, reason = discover(tmp_path)
    assert reason is None and isinstance(source, Ina3221HwmonSource)
    # NC, the shunt-voltage channels 4..6 and "sum of shunt voltages" are not rails
    assert source.rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    reading = source.read()
    assert reading == pytest.approx({"VDD_IN": 5.024 * 0.944, "VDD_CPU_GPU_CV": 5.016 * 0.096, "VDD_SOC": 5.016 * 0.288})
    assert source.total(reading) == pytest.approx(4.742656)  # VDD_IN is the module total
    assert source.description == "ina3221-hwmon: VDD_IN"
    assert source.period_s == pytest.approx(0.020)  # from update_interval


def test_xavier_nx_hwmon_and_iio_layouts_agree(tmp_path):
    boards.xavier_nx_hwmon(tmp_path / "jp5")
    boards.xavier_nx_iio(tmp_path / "jp4")
    hwmon, _ = discover(tmp_path / "jp5")
    iio, _ = discover(tmp_path / "jp4")
    assert isinstance(hwmon, Ina3221HwmonSource) and isinstance(iio, Ina3221IioSource)
    assert hwmon.rails == iio.rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert hwmon.total(hwmon.read()) == pytest.approx(5.008 * 1.014)
    assert iio.read() == pytest.approx({"VDD_IN": 5.079, "VDD_CPU_GPU_CV": 0.695, "VDD_SOC": 1.105})  # in_power is mW
    assert iio.total(iio.read()) == pytest.approx(5.079)


def test_jetson_nano_iio_total_is_pom_5v_in(tmp_path):
    boards.nano_iio(tmp_path)
    source, _ = discover(tmp_path)
    assert isinstance(source, Ina3221IioSource) and source.total_rail == "POM_5V_IN"
    assert source.total(source.read()) == pytest.approx(2.349)


def test_agx_orin_has_no_vdd_in_so_connected_rails_are_summed(tmp_path):
    boards.agx_orin(tmp_path)
    source, _ = discover(tmp_path)
    assert isinstance(source, Ina3221HwmonSource)
    assert source.rails == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]  # both chips, NC skipped
    assert source.total_rail is None
    assert source.total(source.read()) == pytest.approx(3.0 + 1.5 + 4.0 + 0.5)
    assert "sum of connected rails" in source.description and "no VDD_IN" in source.description


def test_thor_vin_in_microwatts_is_preferred(tmp_path):
    boards.thor(tmp_path, vin_uw=38_250_000)
    source, _ = discover(tmp_path)
    assert isinstance(source, Ina238Source)
    assert source.read() == {"VIN": pytest.approx(38.25)}
    assert source.total(source.read()) == pytest.approx(38.25)
    assert source.description.startswith("ina238: VIN")
    # the module rails are still readable on their own
    module = Ina3221HwmonSource.discover(tmp_path)
    assert module is not None and module.total(module.read()) == pytest.approx(10.0 + 7.5 + 3.5)


def test_hwmon_found_through_class_hwmon_too(tmp_path):
    folder = tmp_path / "sys/class/hwmon/hwmon0"
    boards.write(folder / "name", "ina3221")
    boards.write(folder / "in1_label", "VDD_IN")
    boards.write(folder / "in1_input", 5000)
    boards.write(folder / "curr1_input", 1000)
    source = Ina3221HwmonSource.discover(tmp_path)
    assert source is not None and source.total(source.read()) == pytest.approx(5.0)
    assert source.period_s == pytest.approx(0.02)  # no update_interval: the documented default


def test_rapl_packages_only_with_wraparound(tmp_path):
    pkg0, pkg1 = boards.rapl(tmp_path, [(900_000, 1_000_000), (10, 1_000_000)])
    source, _ = discover(tmp_path)
    assert isinstance(source, RaplSource) and source.cumulative
    assert source.rails == ["package-0", "package-1"]  # core/dram sub-domains are not added again
    assert source.energy_j() == 0.0
    boards.write(pkg0 / "energy_uj", 50_000)  # wrapped: 900000 → 1000000 → 50000 is 150000 µJ
    boards.write(pkg1 / "energy_uj", 20_010)
    assert source.energy_j() == pytest.approx(0.15 + 0.02)
    boards.write(pkg0 / "energy_uj", 60_000)
    assert source.energy_j() == pytest.approx(0.16 + 0.02)
    assert "CPU packages only" in source.description


def test_rapl_psys_is_used_alone(tmp_path):
    boards.rapl(tmp_path, [(1000, 1_000_000)], with_psys=True)
    source = RaplSource.discover(tmp_path)
    assert source is not None and source.rails == ["psys"] and "whole platform" in source.description


def test_no_sensor_gives_reason_naming_the_root(tmp_path):
    source, reason = discover(tmp_path)
    assert source is None
    assert reason == "no INA3221, INA238, tegrastats, NVML or RAPL sensor found under " + str(tmp_path)


def _interpreter_for(user_id: int) -> str | None:
    """A Python >= 3.8 that ``user_id`` may execute (the venv under /root is not readable by others)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 8))"],
            user=user_id, capture_output=True, text=True, check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_rapl_permission_error_is_reported_plainly(tmp_path):
    """A real permission error: the counter is mode 0400 and the reader is not its owner.

    As root, permissions do not block reads, so the discovery runs in a child process as user
    nobody (65534) on a world-readable copy of the package and fixture tree.
    """
    if os.geteuid() != 0:
        boards.rapl(tmp_path, [(1000, 1_000_000)])
        os.chmod(tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj", 0)
        source, reason = discover(tmp_path)
        assert source is None and reason is not None
        assert "permission denied" in reason and "CVE-2020-8694" in reason
        return
    nobody = 65534
    interpreter = _interpreter_for(nobody)
    if interpreter is None:
        pytest.skip("no Python >= 3.8 that user nobody may run, so a real permission error cannot be produced")
    work = Path(tempfile.mkdtemp(prefix="edgeq-rapl-perm-"))
    try:
        shutil.copytree(Path(edgeq_runtime.__file__).parent, work / "pkg" / "edgeq_runtime",
                        ignore=shutil.ignore_patterns("__pycache__"))
        boards.rapl(work / "root", [(1000, 1_000_000)])
        counter = work / "root/sys/class/powercap/intel-rapl:0/energy_uj"
        for folder, _, files in os.walk(work):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        os.chmod(counter, 0o400)  # root-only, as on kernels since 2020
        script = textwrap.dedent(
            """
            import sys
            sys.path.insert(0, sys.argv[1])
            from edgeq_runtime.power import discover
            source, reason = discover(sys.argv[2])
            print(source is None)
            print(reason)
            """
        )
        result = subprocess.run(
            [interpreter, "-c", script, str(work / "pkg"), str(work / "root")],
            user=nobody, capture_output=True, text=True, check=False, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        none, reason = result.stdout.strip().splitlines()
        assert none == "True"
        assert reason.startswith("RAPL energy counters found but " + str(counter) + " is not readable: permission denied")
        assert "CVE-2020-8694" in reason and "run as root" in reason
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- tegrastats -----------------------------------------------------------------------------------
# JetPack 6 (timestamp) and JetPack 5 lines are verbatim from the reference; the JetPack 4 and 7 lines
# are built around the reference's rail formats ("VDD_IN 5079/5079", "VDD_IN 9761mW/9761mW/9761mW").
JP6 = (
    "09-21-2025 15:38:17 RAM 3645/7620MB (lfb 63x4MB) SWAP 236/3810MB (cached 0MB) CPU [1%@729,1%@729,4%@729,"
    "1%@729,0%@729,0%@729] EMC_FREQ 0%@204 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 "
    "cpu@44.125C soc2@43.375C soc0@42.125C gpu@44.531C tj@44.531C soc1@43.156C VDD_IN 2957mW/2957mW "
    "VDD_CPU_GPU_CV 486mW/486mW VDD_SOC 1012mW/1012mW"
)
JP5 = (
    "RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] "
    "EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C "
    "VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW"
)
JP4 = (
    "RAM 1515/3964MB (lfb 83x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [5%@102,2%@102,0%@102,"
    "0%@102] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@27.5C CPU@30C PMIC@100C GPU@28.5C AO@36C thermal@29C "
    "POM_5V_IN 2349/2349 POM_5V_GPU 0/0 POM_5V_CPU 349/349"
)
JP4_XAVIER = "RAM 2690/6854MB (lfb 6x1MB) CPU [3%@1190,off] EMC_FREQ 0%@1600 VDD_IN 5079/5079 VDD_CPU_GPU_CV 695/695 VDD_SOC 1105/1105"
JP7 = (
    "11-02-2025 10:01:02 RAM 10321/125772MB (lfb 3x4MB) CPU [0%@972,1%@972,0%@972] EMC_FREQ 0%@3199 GR3D_FREQ 0% "
    "cpu@45.1C tj@46.8C VDD_IN 9761mW/9761mW/9761mW VDD_GPU 1203mW/1190mW/1250mW VDD_CPU_SOC_MSS 2980mW/2975mW/3010mW"
)


@pytest.mark.parametrize(
    "line,expected",
    [
        (JP6, {"VDD_IN": 2.957, "VDD_CPU_GPU_CV": 0.486, "VDD_SOC": 1.012}),
        (JP5, {"VDD_IN": 5.079, "VDD_CPU_GPU_CV": 0.696, "VDD_SOC": 1.104}),
        (JP4, {"POM_5V_IN": 2.349, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.349}),
        (JP4_XAVIER, {"VDD_IN": 5.079, "VDD_CPU_GPU_CV": 0.695, "VDD_SOC": 1.105}),
        (JP7, {"VDD_IN": 9.761, "VDD_GPU": 1.203, "VDD_CPU_SOC_MSS": 2.980}),
        ("RAM 2690/6854MB SWAP 0/1982MB CPU [3%@1904]", {}),
    ],
    ids=["jetpack6-timestamp", "jetpack5", "jetpack4-nano", "jetpack4-xavier", "jetpack7-three-values", "no-rails"],
)
def test_tegrastats_every_format(line, expected):
    assert parse_tegrastats_line(line) == pytest.approx(expected)


FAKE_TEGRASTATS = """#!{python}
# Stands in for /usr/bin/tegrastats: prints the recorded lines at --interval, as the real binary does.
import sys, time
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000.0
lines = {lines!r}
i = 0
while True:
    print(lines[i % len(lines)], flush=True)
    i += 1
    time.sleep(interval)
"""


def test_tegrastats_source_runs_the_binary(tmp_path):
    binary = tmp_path / "usr/bin/tegrastats"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_TEGRASTATS.format(python=sys.executable, lines=[JP5, JP6]))
    binary.chmod(0o755)
    source, reason = discover(tmp_path)
    try:
        assert reason is None and isinstance(source, TegrastatsSource)
        assert source.rails == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"] and source.total_rail == "VDD_IN"
        assert source.period_s == pytest.approx(0.1)
        assert source.total(source.read()) in (pytest.approx(5.079), pytest.approx(2.957))
    finally:
        assert source is not None
        source.close()
    with pytest.raises(OSError, match="stopped"):
        source.read()


def test_tegrastats_that_prints_no_rails_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr("edgeq_runtime.power.tegrastats.FIRST_LINE_TIMEOUT_S", 1.0)
    binary = tmp_path / "usr/bin/tegrastats"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_TEGRASTATS.format(python=sys.executable, lines=["RAM 1/2MB CPU [1%@102]"]))
    binary.chmod(0o755)
    with pytest.raises(SensorUnavailable, match="printed no power rails"):
        TegrastatsSource.discover(tmp_path)


# ---- NVML ------------------------------------------------------------------------------------------
class _NVMLError(Exception):
    pass


def _fake_pynvml(counters_mj: list[list[float]], supported: list[bool]) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's ``pynvml`` with the four calls the source makes."""
    module = types.ModuleType("pynvml")
    reads = [0] * len(counters_mj)
    state = {"shutdown": 0}

    def energy(handle: int) -> float:
        if not supported[handle]:
            raise _NVMLError("Not Supported")
        value = counters_mj[handle][min(reads[handle], len(counters_mj[handle]) - 1)]
        reads[handle] += 1
        return value

    module.NVMLError = _NVMLError  # type: ignore[attr-defined]
    module.nvmlInit = lambda: None  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(counters_mj)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: b"NVIDIA RTX A2000" if h == 0 else "NVIDIA T4"  # type: ignore[attr-defined]
    module.nvmlDeviceGetTotalEnergyConsumption = energy  # type: ignore[attr-defined]
    module.state = state  # type: ignore[attr-defined]
    return module


def test_nvml_sums_gpu_energy_counters(monkeypatch):
    # reads: probe during discovery, baseline at open, then the measurement
    fake = _fake_pynvml([[1_000.0, 1_000.0, 6_000.0], [50.0, 50.0, 2_050.0]], [True, True])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    source = NvmlSource.discover("/")
    assert source is not None and source.rails == ["GPU0 NVIDIA RTX A2000", "GPU1 NVIDIA T4"]
    assert source.energy_j() == pytest.approx(5.0 + 2.0)
    source.close()
    assert fake.state["shutdown"] == 1  # type: ignore[attr-defined]
    assert NvmlSource.discover("/some/fixture/root") is None  # NVML reads the driver, not files


def test_nvml_without_energy_counter_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([[0.0]], [False]))
    with pytest.raises(SensorUnavailable, match="no total-energy counter"):
        NvmlSource.discover("/")


def test_nvml_absent_is_silent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    assert NvmlSource.discover("/") is None

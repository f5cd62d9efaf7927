"""Rebuild the power-sensor sysfs layouts of real boards under a temporary root.

Layouts and example readings follow /work/shared/reference/power-sensors.md (the Linux ina3221 driver
documentation and jetson-stats). Values are written as the kernel writes them: integers in mV, mA,
mW, µW or µJ. Tests rewrite the files between reads to make the readings change.
"""

from __future__ import annotations

from pathlib import Path


def write(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


def ina3221_hwmon(root: Path, device: str, hwmon: str, rails: list[tuple[str, int, int]], update_interval_ms: int = 20) -> Path:
    """One INA3221 chip: ``rails`` = [(label, bus mV, mA)] for channels 1..3 (label "NC" = not connected)."""
    chip = root / "sys/bus/i2c/drivers/ina3221" / device
    write(chip / "name", "ina3221")
    folder = chip / "hwmon" / hwmon
    write(folder / "name", "ina3221")
    write(folder / "update_interval", update_interval_ms)
    write(folder / "samples", 512)
    for k, (label, mv, ma) in enumerate(rails, start=1):
        write(folder / f"in{k}_label", label)
        write(folder / f"in{k}_enable", 0 if label == "NC" else 1)
        write(folder / f"in{k}_input", mv if label != "NC" else 0)
        write(folder / f"curr{k}_input", ma if label != "NC" else 0)
        write(folder / f"curr{k}_crit", 32760)
        write(folder / f"curr{k}_max", 32760)
        # shunt-voltage channels 4..6 carry the same labels but have no current file: not rails
        write(folder / f"in{k + 3}_label", label)
        write(folder / f"in{k + 3}_input", ma * 5)  # µV across a 5 mΩ shunt
    write(folder / "in7_label", "sum of shunt voltages")
    write(folder / "in7_input", sum(ma * 5 for _, _, ma in rails))
    return folder


def orin_nano(root: Path) -> Path:
    return ina3221_hwmon(root, "1-0040", "hwmon3", [("VDD_IN", 5024, 944), ("VDD_CPU_GPU_CV", 5016, 96), ("VDD_SOC", 5016, 288)])


def xavier_nx_hwmon(root: Path) -> Path:
    return ina3221_hwmon(root, "7-0040", "hwmon1", [("VDD_IN", 5008, 1014), ("VDD_CPU_GPU_CV", 5000, 139), ("VDD_SOC", 5000, 221)])


def agx_orin(root: Path) -> tuple[Path, Path]:
    first = ina3221_hwmon(root, "1-0040", "hwmon1", [("VDD_GPU_SOC", 5000, 600), ("VDD_CPU_CV", 5000, 300), ("VIN_SYS_5V0", 5000, 800)])
    second = ina3221_hwmon(root, "1-0041", "hwmon2", [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 100), ("NC", 0, 0)])
    return first, second


def ina3221_iio(root: Path, device: str, rails: list[tuple[str, int, int, int]]) -> Path:
    """JetPack 4 IIO layout: ``rails`` = [(name, mW, mV, mA)] for i = 0..2."""
    folder = root / "sys/bus/i2c/drivers/ina3221x" / device / "iio:device0"
    for i, (name, mw, mv, ma) in enumerate(rails):
        write(folder / f"rail_name_{i}", name)
        write(folder / f"in_power{i}_input", mw)
        write(folder / f"in_voltage{i}_input", mv)
        write(folder / f"in_current{i}_input", ma)
    return folder


def xavier_nx_iio(root: Path) -> Path:
    return ina3221_iio(root, "7-0040", [("VDD_IN", 5079, 5008, 1014), ("VDD_CPU_GPU_CV", 695, 5000, 139), ("VDD_SOC", 1105, 5000, 221)])


def nano_iio(root: Path) -> Path:
    return ina3221_iio(root, "6-0040", [("POM_5V_IN", 2349, 5000, 470), ("POM_5V_GPU", 0, 5000, 0), ("POM_5V_CPU", 349, 5000, 70)])


def thor(root: Path, vin_uw: int = 38_250_000) -> Path:
    """Module rails on an INA3221 plus the carrier-board input on an INA238 (power1_input in µW)."""
    ina3221_hwmon(root, "2-0040", "hwmon4", [("VDD_GPU", 5000, 2000), ("VDD_CPU_SOC_MSS", 5000, 1500), ("VDD_SYS", 5000, 700)])
    chip = root / "sys/bus/i2c/drivers/ina238/2-0044"
    folder = chip / "hwmon" / "hwmon5"
    write(folder / "name", "ina238")
    write(folder / "in1_input", 19_100)  # mV
    write(folder / "curr1_input", 2_003)  # mA
    write(folder / "power1_input", vin_uw)
    return folder


def rapl(root: Path, packages: list[tuple[int, int]], with_psys: bool = False) -> list[Path]:
    """Top-level packages [(energy_uj, max_energy_range_uj)] with nested core/dram sub-domains."""
    base = root / "sys/class/powercap"
    folders = []
    for n, (energy, max_range) in enumerate(packages):
        folder = base / f"intel-rapl:{n}"
        write(folder / "name", f"package-{n}")
        write(folder / "energy_uj", energy)
        write(folder / "max_energy_range_uj", max_range)
        write(folder / "enabled", 1)
        for m, sub in enumerate(("core", "dram")):
            nested = base / f"intel-rapl:{n}:{m}"
            write(nested / "name", sub)
            write(nested / "energy_uj", 123_456_789)  # would be double counted if read
            write(nested / "max_energy_range_uj", max_range)
        folders.append(folder)
    if with_psys:
        folder = base / f"intel-rapl:{len(packages)}"
        write(folder / "name", "psys")
        write(folder / "energy_uj", 5_000_000)
        write(folder / "max_energy_range_uj", 262_143_328_850)
        folders.append(folder)
    return folders

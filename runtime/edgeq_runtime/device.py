"""What machine a benchmark ran on: host, CPU, and on Jetson the module, power mode and clocks.

Jetson results depend on nvpmodel and jetson_clocks as much as on the model, so they are recorded
when readable. Every value is read from the system; a key is left out when it cannot be read.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

_GPU_DEVFREQ = re.compile(r"gpu|ga10b|gv11b|gp10b|gm20b|gb10b", re.IGNORECASE)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def _cpu_name(root: Path) -> str:
    text = _read(root / "proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(r"^" + key + r"\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def jetson_model(root: Union[str, Path] = "/") -> Optional[str]:
    base = Path(root)
    model = _read(base / "proc/device-tree/model")
    if model and ("jetson" in model.lower() or (base / "etc/nv_tegra_release").exists()):
        return model
    return None


def power_mode(root: Union[str, Path] = "/") -> Optional[str]:
    """``nvpmodel -q``'s mode name (e.g. MAXN, 15W), only on the real system."""
    if str(Path(root).resolve()) != "/":
        return None
    binary = shutil.which("nvpmodel")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # "NV Power Mode: 15W" then the mode number on the next line
    match = re.search(r"NV Power Mode:\s*(\S+)\s*(?:\n\s*(\d+))?", out)
    if not match:
        return None
    return match.group(1) + (" (nvpmodel " + match.group(2) + ")" if match.group(2) else "")


def clocks(root: Union[str, Path] = "/") -> Dict[str, Any]:
    base = Path(root)
    result: Dict[str, Any] = {}
    for folder in sorted((base / "sys/class/devfreq").glob("*")):
        if _GPU_DEVFREQ.search(folder.name):
            current = _read(folder / "cur_freq")
            if current and current.isdigit():
                result["gpu_mhz"] = int(current) / 1e6
                maximum = _read(folder / "max_freq")
                if maximum and maximum.isdigit():
                    result["gpu_max_mhz"] = int(maximum) / 1e6
                break
    emc = _read(base / "sys/kernel/debug/bpmp/debug/clk/emc/rate")  # debugfs: root only, often absent
    if emc and emc.isdigit():
        result["emc_mhz"] = int(emc) / 1e6
    cpu_mhz: List[float] = []
    for folder in sorted((base / "sys/devices/system/cpu").glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        current = _read(folder / "cpufreq/scaling_cur_freq")
        if current and current.isdigit():
            cpu_mhz.append(int(current) / 1000.0)
    if cpu_mhz:
        result["cpu_mhz"] = cpu_mhz
    return result


def device_info(root: Union[str, Path] = "/") -> Dict[str, Any]:
    base = Path(root)
    info: Dict[str, Any] = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cpu": _cpu_name(base),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    model = jetson_model(base)
    if model:
        info["jetson_model"] = model
    mode = power_mode(base)
    if mode:
        info["power_mode"] = mode
    measured = clocks(base)
    if measured:
        info["clocks"] = measured
    return info

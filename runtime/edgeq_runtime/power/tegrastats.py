"""Jetson rails from ``tegrastats`` output, for boards where the sysfs rails cannot be read directly.

Rails appear as ``NAME current/average`` in milliwatts, in three formats:

- JetPack 4: bare numbers, ``VDD_IN 5079/5079``;
- JetPack 5/6: with units, ``VDD_IN 5079mW/5079mW`` (JetPack 6 prefixes ``MM-DD-YYYY HH:MM:SS``);
- JetPack 7: three values, ``VDD_IN 9761mW/9761mW/9761mW``.

Only the first (current) value is used: the sampler does its own averaging. The source runs
``tegrastats --interval <ms>`` as a subprocess and keeps the latest parsed line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Dict, Optional, Union

from edgeq_runtime.power import register
from edgeq_runtime.power.base import PowerSource, SensorUnavailable, choose_total_rail, under_root

# NAME then 2 or 3 slash-separated integers, each optionally "mW", ending at whitespace or end of line.
# The lookahead keeps "RAM 3645/7620MB" and "IRAM 0/252kB" out; "@" values (clocks, temperatures) never match.
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_TIMESTAMP = re.compile(r"^\d\d-\d\d-\d{4} \d\d:\d\d:\d\d\s+")
_NOT_RAILS = ("RAM", "SWAP", "IRAM", "LFB")

DEFAULT_INTERVAL_MS = 100
FIRST_LINE_TIMEOUT_S = 5.0


def parse_tegrastats_line(line: str) -> Dict[str, float]:
    """Rail → current power in watts; an empty dict for a line without power rails."""
    text = _TIMESTAMP.sub("", line.strip())
    rails: Dict[str, float] = {}
    for match in _RAIL.finditer(text):
        name = match.group(1)
        if name.upper() in _NOT_RAILS:
            continue
        rails[name] = int(match.group(2)) / 1000.0
    return rails


def find_tegrastats(root: Union[str, Path]) -> Optional[Path]:
    if str(Path(root).resolve()) == "/":
        found = shutil.which("tegrastats")
        if found:
            return Path(found)
    for candidate in ("/usr/bin/tegrastats", "/usr/sbin/tegrastats"):
        path = under_root(root, candidate)
        if path.is_file():
            return path
    return None


@register
class TegrastatsSource(PowerSource):
    """Rails parsed from a running ``tegrastats``; total = VDD_IN / POM_5V_IN, else the sum of the rails."""

    name = "tegrastats"
    priority = 40

    def __init__(self, binary: Path, interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        self.binary = binary
        self.period_s = interval_ms / 1000.0
        self._latest: Dict[str, float] = {}
        self._have_line = threading.Event()
        self._lock = threading.Lock()
        try:
            self._process: Optional[subprocess.Popen[str]] = subprocess.Popen(
                [str(binary), "--interval", str(int(interval_ms))],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            )
        except OSError as exc:
            raise SensorUnavailable("tegrastats found at " + str(binary) + " but cannot be started (" + str(exc) + ")") from None
        self._reader = threading.Thread(target=self._follow, name="edgeq-tegrastats", daemon=True)
        self._reader.start()
        if not self._have_line.wait(FIRST_LINE_TIMEOUT_S):
            error = self._stderr_text()
            self.close()
            raise SensorUnavailable(
                "tegrastats at " + str(binary) + " printed no power rails within " + str(FIRST_LINE_TIMEOUT_S) + " s"
                + (" (" + error + ")" if error else "")
            )
        self.rails = sorted(self._latest)
        self.total_rail = choose_total_rail(self.rails)

    def _stderr_text(self) -> str:
        process = self._process
        if process is None or process.poll() is None or process.stderr is None:
            return ""
        return " ".join(process.stderr.read().split())[:200]

    def _follow(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            rails = parse_tegrastats_line(line)
            if rails:
                with self._lock:
                    self._latest = rails
                self._have_line.set()

    @classmethod
    def discover(cls, root: Union[str, Path] = "/") -> Optional[PowerSource]:
        binary = find_tegrastats(root)
        if binary is None:
            return None
        if not os.access(str(binary), os.X_OK):
            raise SensorUnavailable("tegrastats found at " + str(binary) + " but it is not executable: permission denied")
        return cls(binary)

    def read(self) -> Dict[str, float]:
        with self._lock:
            latest = dict(self._latest)
        process = self._process
        if process is None or process.poll() is not None:
            raise OSError("tegrastats (" + str(self.binary) + ") stopped")
        return latest

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=2)
        if process is not None:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

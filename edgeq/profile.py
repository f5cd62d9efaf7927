"""The profiling driver: benchmark a bundle or ONNX file with the runtime, from the workstation toolkit.

The runtime owns measurement (timing loop, op profiler, power sensors); this module only opens
the session, forwards the options and turns the runtime's user errors into ``EdgeqError`` so the
``edgeq`` CLI reports them in one line like every other command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, EdgeqError, MissingDependencyError, ModelLoadError
from edgeq.frontends.resolve import resolve_model

ENERGY_MODES = ("auto", "none")


def bundle_target(path: Path) -> str | None:
    """The target name recorded in a bundle's manifest, if there is one to read."""
    manifest = path / "manifest.json" if path.is_dir() else None
    if manifest is None or not manifest.is_file():
        return None
    try:
        target = json.loads(manifest.read_text(encoding="utf-8")).get("target")
    except (OSError, ValueError, AttributeError):
        return None  # the runtime validates the manifest itself and says what is wrong
    if isinstance(target, dict):
        target = target.get("name")
    return str(target) if target else None


@dataclass(frozen=True)
class BenchOptions:
    """How to benchmark, checked once for a local or a remote (``--board``) profile.

    ``iterations`` and ``duration_s`` are alternatives: a fixed count, or as many iterations as
    fit in that many seconds. ``energy="auto"`` measures power when the machine has a readable
    sensor and records why not otherwise; ``idle_s`` seconds of idle power are recorded first so
    energy above idle can be reported. None takes the runtime's default.
    """

    warmup: int | None = None
    iterations: int | None = None
    duration_s: float | None = None
    batch: int | None = None
    energy: str = "auto"
    idle_s: float | None = None
    threads: int | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.energy not in ENERGY_MODES:
            raise ConfigError(f"--energy: unknown value {self.energy!r}; expected one of {', '.join(ENERGY_MODES)}")
        if self.iterations is not None and self.duration_s is not None:
            raise ConfigError("--iterations and --duration are alternatives; give one of them")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"--batch: must be 1 or more, got {self.batch}")

    def run_arguments(self) -> list[str]:
        """The same options as ``edgeq-run bench`` arguments."""
        args = ["--energy", self.energy, "--backend", self.backend]
        for option, value in (("--warmup", self.warmup), ("--iterations", self.iterations), ("--duration", self.duration_s),
                              ("--batch", self.batch), ("--idle", self.idle_s), ("--threads", self.threads)):
            if value is not None:
                args += [option, str(value)]
        return args


def profile(path: str | Path, options: BenchOptions | None = None, **fields: Any) -> dict[str, Any]:
    """Benchmark ``path`` (a bundle folder or an ``.onnx`` file) and return the result dict.

    ``options`` (or its fields as keywords: ``iterations=50, energy="none"``) say how; the dict
    carries ``target`` (the bundle's target name) when the manifest names one.
    """
    opts = options or BenchOptions(**fields)
    path = resolve_model(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such bundle folder or ONNX file")

    try:
        from edgeq_runtime.bench import benchmark
        from edgeq_runtime.errors import BundleError
        from edgeq_runtime.session import Session
    except ImportError as exc:  # pragma: no cover - edgeq depends on edgeq-runtime
        raise MissingDependencyError("edgeq-runtime", "runtime", "edgeq profile") from exc

    run: dict[str, Any] = {"energy": opts.energy, "batch": opts.batch}
    for name, value in (("warmup", opts.warmup), ("duration", opts.duration_s), ("idle_s", opts.idle_s)):
        if value is not None:
            run[name] = value
    if opts.iterations is not None or opts.duration_s is None:
        run["iterations"] = opts.iterations
    try:
        session = Session(path, backend=opts.backend, threads=opts.threads)
        try:
            result = benchmark(session, **run)
        finally:
            close = getattr(session, "close", None)
            if callable(close):
                close()
    except BundleError as exc:
        raise EdgeqError(str(exc)) from None
    data: dict[str, Any] = result.to_dict()
    target = bundle_target(path)
    if target and not data.get("target"):
        data["target"] = target
    return data

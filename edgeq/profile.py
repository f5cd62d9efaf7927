"""The profiling driver: benchmark a bundle or ONNX file with the runtime, from the workstation toolkit.

The runtime owns measurement (timing loop, op profiler, power sensors); this module only opens
the session, forwards the options and turns the runtime's user errors into ``EdgeqError`` so the
``edgeq`` CLI reports them in one line like every other command.
"""

from __future__ import annotations

import json
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


def profile(
    path: str | Path,
    *,
    warmup: int | None = None,
    iterations: int | None = None,
    duration_s: float | None = None,
    batch: int | None = None,
    energy: str = "auto",
    idle_s: float | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Benchmark ``path`` (a bundle folder or an ``.onnx`` file) and return the result dict.

    ``iterations`` and ``duration_s`` are alternatives: a fixed count, or as many iterations as
    fit in that many seconds. ``energy="auto"`` measures power when the machine has a readable
    sensor and records why not otherwise; ``idle_s`` seconds of idle power are recorded first so
    energy above idle can be reported. Options left as None take the runtime's defaults. The
    dict carries ``target`` (the bundle's target name) when the manifest names one.
    """
    path = resolve_model(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such bundle folder or ONNX file")
    if energy not in ENERGY_MODES:
        raise ConfigError(f"--energy: unknown value {energy!r}; expected one of {', '.join(ENERGY_MODES)}")
    if iterations is not None and duration_s is not None:
        raise ConfigError("--iterations and --duration are alternatives; give one of them")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch: must be 1 or more, got {batch}")

    try:
        from edgeq_runtime.bench import benchmark
        from edgeq_runtime.errors import BundleError
        from edgeq_runtime.session import Session
    except ImportError as exc:  # pragma: no cover - edgeq depends on edgeq-runtime
        raise MissingDependencyError("edgeq-runtime", "runtime", "edgeq profile") from exc

    options: dict[str, Any] = {"energy": energy, "batch": batch}
    for name, value in (("warmup", warmup), ("duration", duration_s), ("idle_s", idle_s)):
        if value is not None:
            options[name] = value
    if iterations is not None or duration_s is None:
        options["iterations"] = iterations
    try:
        session = Session(path, backend=backend, threads=threads)
        try:
            result = benchmark(session, **options)
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

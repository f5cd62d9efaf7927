"""PyTorch checkpoints loaded as tensors only: ``torch.load(weights_only=True)`` and nothing else.

A pickle can run any code when it is loaded, so a checkpoint that needs more than tensors is
refused with the class it wanted to build, never loaded "just this once".
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from edgeq.errors import ModelLoadError
from edgeq.frontends.torch_support import import_torch, root_cause

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _is_tensor_dict(torch: Any, value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A state dict from a ``torch.save`` file, loaded with ``weights_only=True`` and nothing else.

    A pickle can run any code when it is loaded; a checkpoint should hold tensors only, so one
    that needs more is refused with the class it wanted to build, never loaded "just this once".
    Training checkpoints that wrap the state dict (``{"state_dict": ..., "epoch": 3}``) are
    unwrapped.
    """
    torch = import_torch()
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
        found = _UNSUPPORTED_GLOBAL.search(message)
        if found:
            raise ModelLoadError(
                f"{path}: the checkpoint contains arbitrary Python objects ({found.group(1)}); edgeq only "
                "loads tensors (torch.load weights_only=True), because unpickling anything else can run "
                "code; re-save it with torch.save(model.state_dict(), path)"
            ) from None
        if not zipfile.is_zipfile(path) or "Weights only load failed" not in message:
            raise ModelLoadError(f"{path}: not a PyTorch checkpoint ({root_cause(exc)})") from None
        raise ModelLoadError(
            f"{path}: the checkpoint needs more than tensors to load ({root_cause(exc)}); edgeq only "
            "loads tensors (weights_only=True); re-save it with torch.save(model.state_dict(), path)"
        ) from None
    if _is_tensor_dict(torch, obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if _is_tensor_dict(torch, obj.get(key)):
                return dict(obj[key])
    kind = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
    raise ModelLoadError(
        f"{path}: expected a state dict (names → tensors), found {kind}; "
        "save one with torch.save(model.state_dict(), path)"
    )

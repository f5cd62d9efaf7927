"""Which opsets a model imports, and raising them: the one place edgeq converts opset versions.

Schemes need a minimum default-domain opset (per-channel Q/DQ needs 13, block-wise
DequantizeLinear 21) and rewrites import extra domains (``com.microsoft`` for MatMulNBits);
both go through here so the conversion and its error message are the same everywhere.
"""

from __future__ import annotations

import onnx
from onnx import helper

from edgeq.errors import UnsupportedError


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    """The version ``model`` imports ``domain`` at (the default domain also as ``ai.onnx``), 0 if none."""
    for opset in model.opset_import:
        if opset.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(opset.version)
    return 0


def set_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    """Import ``domain`` at ``version`` at least (the default domain must be converted first)."""
    current = opset_version(model, domain)
    if current >= version:
        return
    if domain == "":
        raise ValueError(f"the default opset must be converted to {version} before rewriting")
    for opset in model.opset_import:
        if opset.domain == domain:
            opset.version = version
            break
    else:
        model.opset_import.append(helper.make_opsetid(domain, version))


def raise_opset(model: onnx.ModelProto, version: int, why: str, instead: str) -> onnx.ModelProto:
    """``model`` with its default-domain opset raised to ``version`` (itself when already there).

    Uses onnx's version converter and raises the IR version when the new opset needs it.
    ``why`` says what needs the opset and ``instead`` what the user can do when the conversion
    fails; both go into the :class:`UnsupportedError`.
    """
    current = opset_version(model, "")
    if current >= version:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, version)
    except Exception as exc:  # the converter raises bare RuntimeErrors / ValueErrors per op
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UnsupportedError(
            f"model opset {current} is below {version}, which {why} needs, and automatic conversion failed ({first}); {instead}"
        ) from None
    min_ir = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, min_ir)
    return converted

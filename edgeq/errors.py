"""User-facing errors.

Everything a user can get wrong (a path, a tensor name, an option value) raises one of these.
The CLI prints ``error: <message>`` on one line and exits with status 2; anything else that
escapes is a bug in edgeq and keeps its traceback.
"""

from __future__ import annotations


class EdgeqError(Exception):
    """A problem with the user's input, told in one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(EdgeqError):
    """A model file is missing, unreadable or not valid ONNX."""


class DataError(EdgeqError):
    """Calibration or evaluation data does not fit the model."""


class ConfigError(EdgeqError):
    """An option, config file, target profile or serialised result is invalid."""


class UnsupportedError(EdgeqError):
    """The request is valid but the model or target cannot do it; the message says what would work."""


class MissingDependencyError(EdgeqError):
    """An optional dependency (torch, tensorrt, ...) is needed and not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed; "
            f"install it with: pip install 'edgeq[{extra}]'"
        )


class BoardError(EdgeqError):
    """A board over SSH cannot be reached, refused the login, or cannot run what was asked."""


class BoardLostError(BoardError):
    """The connection to a board dropped while a command was running on it."""

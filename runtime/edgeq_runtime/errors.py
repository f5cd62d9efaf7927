"""User-facing errors of the on-device runtime.

The runtime cannot import ``edgeq`` (it runs on boards that only have numpy and onnxruntime or
TensorRT), so it carries its own user-error type. Like ``edgeq.errors.EdgeqError`` the message is
one line naming the file, tensor or option and what was expected; ``edgeq-run`` prints
``error: <message>`` and exits with status 2. Anything else that escapes is a bug.
"""

from __future__ import annotations


class BundleError(Exception):
    """A problem with the user's bundle, model, inputs or options, told in one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class MissingDependencyError(BundleError):
    """An optional package (tensorrt, nvidia-ml-py) is needed for what was asked and is absent."""

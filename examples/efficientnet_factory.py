"""EfficientNet-Lite0 as a PyTorch user holds it: a factory for edgeq's ``file.py:factory`` specs.

Every edgeq command that takes ``MODEL.onnx`` also takes this file's factory instead::

    edgeq inspect examples/efficientnet_factory.py:efficientnet_lite0

edgeq calls the function, exports the module with ``torch.onnx.export``, checks the ONNX graph
against the module on the example inputs, and caches the result (``~/.cache/edgeq/torch``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.models import IMAGE_SIZE, efficientnet_lite0_module  # noqa: E402

# Name the graph's tensors the way the calibration data does (images_calib.npz has "input").
EDGEQ_EXPORT = {"input_names": ["input"], "output_names": ["logits"]}


def efficientnet_lite0() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], tuple[dict[int, str], ...]]:
    """(module, example_inputs, dynamic_shapes): any batch size, 224x224 RGB in [-1, 1]."""
    module = efficientnet_lite0_module()
    generator = torch.Generator().manual_seed(0)
    # Two images, not one: torch.export fixes an axis whose example size is 1.
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1
    return module, (images,), ({0: "batch"},)

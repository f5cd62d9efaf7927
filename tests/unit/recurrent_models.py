"""Small recurrent models for tests and benchmarks: a CRNN text recogniser exported by torch, and silero-vad.

The CRNN is the family the issue names: a conv stack, a 2-layer (bi)LSTM or GRU, a linear
layer and CTC; ``torch.onnx.export`` writes real ``LSTM``/``GRU`` ops. silero-vad's ONNX
files ship inside its pip package (no hub): ``silero_vad_16k_sequence.onnx`` has a top-level
LSTM with ``h``/``c`` state inputs, ``silero_vad_16k_op15.onnx`` the same LSTM inside ``If``
branches, reading outer-scope weights through ``Slice``/``Concat``.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import onnx

SR = 16000
CHUNK, CONTEXT = 512, 64  # silero-vad at 16 kHz: 32 ms chunks after the previous chunk's last 64 samples
SILERO_FILES = ("silero_vad_16k_sequence.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx")


def silero_path(name: str) -> Path | None:
    """The ONNX file ``name`` shipped by the ``silero-vad`` package, None when it is not installed."""
    try:
        import silero_vad
    except ImportError:
        return None
    path = Path(silero_vad.__file__).parent / "data" / name
    return path if path.exists() else None


def crnn_module(
    rnn: str = "lstm", bidirectional: bool = True, classes: int = 37, height: int = 32, hidden: int = 128, seed: int = 0
) -> Any:
    """A CRNN (3 convs with BatchNorm, a 2-layer RNN of ``hidden`` units, linear, log-softmax over ``classes``).

    Input ``[N, 1, height, W]``, output ``[W/2, N, classes]`` (time first, as CTC wants it).
    """
    import torch

    torch.manual_seed(seed)

    class CRNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d((2, 1)),
                torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.MaxPool2d((2, 1)),
            )
            layer = torch.nn.LSTM if rnn == "lstm" else torch.nn.GRU
            self.rnn = layer(64 * (height // 8), hidden, num_layers=2, bidirectional=bidirectional)
            self.fc = torch.nn.Linear(hidden * (2 if bidirectional else 1), classes)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            features = self.convs(image)  # [N, 64, H/8, W/2]
            n, c, h, w = features.shape
            sequence = features.permute(3, 0, 1, 2).reshape(w, n, c * h)
            out, _ = self.rnn(sequence)
            return self.fc(out).log_softmax(-1)  # [T, N, classes]

    return CRNN()


def export_crnn(module: Any, path: Path, height: int = 32) -> onnx.ModelProto:
    """``torch.onnx.export`` (TorchScript exporter: real LSTM/GRU ops, a second to run) to ``path``."""
    import warnings

    import torch

    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.randn(1, 1, height, 64),), str(path), dynamo=False, opset_version=17,
            input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch", 3: "width"}, "logits": {0: "time", 1: "batch"}},
        )
    return onnx.load(str(path))


def crnn_onnx(
    path: Path, rnn: str = "lstm", bidirectional: bool = True, classes: int = 37, height: int = 32, hidden: int = 128, seed: int = 0
) -> onnx.ModelProto:
    """An untrained CRNN with BatchNorm statistics that are not the identity, exported to ``path``."""
    import torch

    module = crnn_module(rnn, bidirectional, classes, height, hidden, seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
    return export_crnn(module, path, height)


def synthesize(text: str, voice: str, speed: int, path: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng (``voice``, ``speed`` words a minute) as 16 kHz float32 samples."""
    from scipy.signal import resample_poly

    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return resample_poly(audio, SR, rate).astype(np.float32)


def chunk_rows(stream: np.ndarray) -> np.ndarray:
    """``[T, 576]``: each 512-sample chunk after the previous chunk's last 64 samples (silero's own framing)."""
    n = len(stream) // CHUNK
    chunks = stream[: n * CHUNK].reshape(n, CHUNK)
    context = np.concatenate([np.zeros((1, CONTEXT), np.float32), chunks[:-1, -CONTEXT:]])
    return np.ascontiguousarray(np.concatenate([context, chunks], axis=1))

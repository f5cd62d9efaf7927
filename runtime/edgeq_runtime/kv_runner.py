"""One decoder step after another on onnxruntime, the KV cache never passing through numpy.

Two ways to carry the cache, chosen by the bundle's ``decoder.kv.shared_buffer``:

* **shared buffer** (onnxruntime's ``GroupQueryAttention``, as onnxruntime-genai's builder writes
  it): one ``OrtValue`` per past tensor, [1, kv_heads, max_length, head_size], allocated once and
  bound as both ``past_key_values.N.*`` and ``present.N.*``: the op writes the new keys in place,
  so nothing is allocated or copied per step, whatever the length;
* **concat** (any other graph: present = past ++ new keys): each step's ``present`` outputs are
  left in onnxruntime's memory and bound as the next step's ``past`` inputs, so the cache is
  never converted to numpy and back; only the logits row is read.

Logits of a decode step go into one preallocated [1, 1, vocab] buffer. Per step the only new
numpy arrays are the few int64 ids, positions and the mask.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from edgeq_runtime.decoder_spec import DecoderSpec
from edgeq_runtime.errors import BundleError


class OrtKVRunner:
    """Prefill and decode steps of one sequence (batch 1) on an ``onnxruntime.InferenceSession``."""

    def __init__(self, ort: Any, session: Any, spec: DecoderSpec, max_length: int, label: str) -> None:
        self._ort = ort
        self._session = session
        self.spec = spec
        self.label = label
        self.max_length = max_length
        kv = spec.kv
        self._past_names, self._present_names = kv.past_names(), kv.present_names()
        self._dtype = np.dtype(kv.dtype)
        inputs = {i.name for i in session.get_inputs()}
        self._position_ids = "position_ids" in inputs
        shape = [1, kv.kv_heads, max_length if kv.shared_buffer else 0, kv.head_size]
        # One array per tensor (an OrtValue made from numpy uses the array's memory, so a shared
        # array would be one buffer for every layer); the arrays are kept alive with their values.
        self._arrays = [np.zeros(shape, self._dtype) for _ in self._past_names]
        self._cache: List[Any] = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]
        self._logits_array = np.zeros((1, 1, spec.vocab_size), np.float32)
        self._logits = ort.OrtValue.ortvalue_from_numpy(self._logits_array)
        self.length = 0  # tokens in the cache

    def cache_bytes(self) -> int:
        """Bytes the cache holds now (shared buffer: the whole preallocated length)."""
        kv = self.spec.kv
        tokens = self.max_length if kv.shared_buffer else self.length
        return 2 * kv.layers * kv.kv_heads * kv.head_size * self._dtype.itemsize * tokens

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Run ``ids`` (1-D) after the cached tokens; returns the last position's logits [vocab] (float32)."""
        count = int(ids.shape[0])
        if self.length + count > self.max_length:
            raise BundleError(self.label + ": " + str(self.length + count) + " tokens exceed the cache length "
                              + str(self.max_length))
        total = self.length + count
        binding = self._session.io_binding()
        binding.bind_cpu_input("input_ids", ids.reshape(1, count).astype(np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        if self._position_ids:
            binding.bind_cpu_input("position_ids", np.arange(self.length, total, dtype=np.int64).reshape(1, count))
        for name, value in zip(self._past_names, self._cache):
            binding.bind_ortvalue_input(name, value)
        decode = count == 1
        if decode:
            binding.bind_ortvalue_output("logits", self._logits)
        else:
            binding.bind_output("logits", "cpu")
        shared = self.spec.kv.shared_buffer
        for name, value in zip(self._present_names, self._cache):
            if shared:
                binding.bind_ortvalue_output(name, value)
            else:
                binding.bind_output(name, "cpu")
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime's own error types: the model cannot run this step
            raise BundleError(self.label + ": onnxruntime failed at cache length " + str(self.length) + " ("
                              + " ".join(str(exc).split()) + ")") from None
        outputs = binding.get_outputs()
        if not shared:
            self._cache = list(outputs[1:])
        self.length = total
        logits = self._logits.numpy() if decode else outputs[0].numpy()
        return np.asarray(logits[0, -1], np.float32)


def make_runner(backend: Any, spec: DecoderSpec, max_length: int, label: str) -> Optional[OrtKVRunner]:
    """An ``OrtKVRunner`` on ``backend``'s onnxruntime session, or None for engines without IO binding."""
    session = getattr(backend, "ort_session", None)
    if session is None:
        return None
    return OrtKVRunner(backend.ort_module, session, spec, max_length, label)

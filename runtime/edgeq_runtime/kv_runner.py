"""One decoder step after another on onnxruntime, the KV cache never passing through numpy.

Two ways to carry the cache, chosen by the bundle's ``decoder.kv.shared_buffer``:

* **shared buffer** (onnxruntime's ``GroupQueryAttention``, as onnxruntime-genai's builder writes
  it): one ``OrtValue`` per past tensor, [1, kv_heads, max_length, head_size], allocated once and
  bound as both ``past_key_values.N.*`` and ``present.N.*``: the op writes the new keys in place,
  so nothing is allocated or copied per step, whatever the length;
* **concat** (any other graph: present = past ++ new keys): each step's ``present`` outputs are
  left in onnxruntime's memory and bound as the next step's ``past`` inputs, so the cache is
  never converted to numpy and back; only the logits row is read.

Logits of a decode step go into one preallocated [1, 1, vocab] buffer; the mask and positions are
views of preallocated max-length arrays. Per step the only new numpy array is the token id.
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
        # The mask and positions of every step are views of these (nothing allocated per step grows).
        self._mask = np.ones((1, max_length), np.int64)
        self._positions = np.arange(max_length, dtype=np.int64).reshape(1, max_length)
        self.length = 0  # tokens in the cache
        self._decode_binding: Any = None

    def cache_bytes(self) -> int:
        """Bytes the cache holds now (shared buffer: the whole preallocated length)."""
        kv = self.spec.kv
        tokens = self.max_length if kv.shared_buffer else self.length
        return 2 * kv.layers * kv.kv_heads * kv.head_size * self._dtype.itemsize * tokens

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Run ``ids`` (1-D) after the cached tokens; the last position's logits [vocab] (float32; after a decode
        step a view of the preallocated buffer, valid until the next step)."""
        count = int(ids.shape[0])
        if self.length + count > self.max_length:
            raise BundleError(self.label + ": " + str(self.length + count) + " tokens exceed the cache length "
                              + str(self.max_length))
        total = self.length + count
        decode = count == 1
        shared = self.spec.kv.shared_buffer
        # A shared-buffer decode step rebinds only the ids, mask and positions: the cache and the
        # logits buffer stay bound in one IO binding kept from step to step.
        binding = self._decode_binding if decode and shared else None
        fresh = binding is None
        if binding is None:
            binding = self._session.io_binding()
        binding.bind_cpu_input("input_ids", ids.reshape(1, count).astype(np.int64))
        binding.bind_cpu_input("attention_mask", self._mask[:, :total])
        if self._position_ids:
            binding.bind_cpu_input("position_ids", self._positions[:, self.length : total])
        if fresh:
            for name, value in zip(self._past_names, self._cache):
                binding.bind_ortvalue_input(name, value)
            if decode:
                binding.bind_ortvalue_output("logits", self._logits)
            else:
                binding.bind_output("logits", "cpu")
            for name, value in zip(self._present_names, self._cache):
                if shared:
                    binding.bind_ortvalue_output(name, value)
                else:
                    binding.bind_output(name, "cpu")
            if decode and shared:
                self._decode_binding = binding
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime's own error types: the model cannot run this step
            raise BundleError(self.label + ": onnxruntime failed at cache length " + str(self.length) + " ("
                              + " ".join(str(exc).split()) + ")") from None
        self.length = total
        if decode and shared:
            return self._logits_array[0, -1]  # the bound buffer itself: onnxruntime wrote into it
        outputs = binding.get_outputs()
        if not shared:
            self._cache = list(outputs[1:])
        return self._logits_array[0, -1] if decode else np.asarray(outputs[0].numpy()[0, -1], np.float32)


def make_runner(backend: Any, spec: DecoderSpec, max_length: int, label: str) -> Optional[OrtKVRunner]:
    """An ``OrtKVRunner`` on ``backend``'s onnxruntime session, or None for engines without IO binding."""
    session = getattr(backend, "ort_session", None)
    if session is None:
        return None
    return OrtKVRunner(backend.ort_module, session, spec, max_length, label)

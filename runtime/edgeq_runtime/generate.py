"""Text generation with a decoder bundle: prompt in, tokens out as they are made.

``stream`` is the loop: validate the request against the bundle's ``decoder`` block (ids inside
the vocabulary, the prompt shorter than the context, ``max_new_tokens`` >= 1), one prefill of the
whole prompt, then one decode step per token on ``kv_runner`` (the cache stays in onnxruntime's
memory), each token picked by ``sampling`` and yielded at once with the text it adds and its
time. It stops at a stop id (by default the bundle's EOS ids; the stop token is not yielded), at
``max_new_tokens``, or when the context is full. ``generate`` collects the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edgeq_runtime.decoder_spec import DecoderSpec
from edgeq_runtime.errors import BundleError
from edgeq_runtime.kv_runner import make_runner
from edgeq_runtime.sampling import Sampler, SamplingConfig
from edgeq_runtime.tokenizer import TextCodec, TextStream, load_codec, tokenizers_missing_reason


@dataclass
class Token:
    """One generated token: its id, the text it adds (empty without a tokenizer), its step time."""

    id: int
    text: str
    ms: float


@dataclass
class Generation:
    """A finished generation: prompt and new ids, text, why it stopped, and the times."""

    prompt_ids: List[int]
    ids: List[int]
    text: str
    finish_reason: str  # "length" | "stop" | "context"
    prefill_ms: float
    step_ms: List[float] = field(default_factory=list)
    cache_bytes: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"prompt_ids": self.prompt_ids, "ids": self.ids, "text": self.text,
                "finish_reason": self.finish_reason, "prefill_ms": self.prefill_ms, "step_ms": self.step_ms,
                "cache_bytes": self.cache_bytes}


@dataclass
class GenerationRequest:
    """What to generate; ``prompt`` (text) or ``ids``, exactly one."""

    prompt: Optional[str] = None
    ids: Optional[Sequence[int]] = None
    max_new_tokens: int = 64
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop_ids: Optional[Sequence[int]] = None  # None: the bundle's EOS ids; [] never stops early


class Generator:
    """A decoder bundle's generation state: its spec, tokenizer and the backend to run."""

    def __init__(self, backend: Any, spec: Optional[DecoderSpec], bundle: Optional[Path], label: str) -> None:
        if spec is None or bundle is None:
            raise BundleError(label + ": not a decoder bundle (its manifest has no decoder block; export the "
                              "KV-cache model with edgeq export)")
        self.backend = backend
        self.spec = spec
        self.label = label
        self.codec: Optional[TextCodec] = load_codec(bundle, spec.tokenizer, spec.vocab_size)

    def prompt_ids(self, request: GenerationRequest) -> List[int]:
        """The prompt as ids, checked: inside the vocabulary and leaving room in the context."""
        if (request.prompt is None) == (request.ids is None):
            raise BundleError("give a prompt (text) or token ids, not both and not neither")
        if request.prompt is not None:
            if self.codec is None:
                why = ("the bundle has no tokenizer" if self.spec.tokenizer is None
                       else tokenizers_missing_reason() or "the tokenizer did not load")
                raise BundleError(self.label + ": a text prompt needs a tokenizer, but " + why + "; pass --ids")
            ids = self.codec.encode(request.prompt)
        else:
            ids = [int(i) for i in np.asarray(request.ids, dtype=np.int64).reshape(-1)] if request.ids is not None else []
        if not ids:
            raise BundleError("the prompt is empty: give at least one token")
        bad = [i for i in ids if not 0 <= i < self.spec.vocab_size]
        if bad:
            raise BundleError("token id " + str(bad[0]) + " is outside the model's vocabulary (0.."
                              + str(self.spec.vocab_size - 1) + ")")
        if len(ids) >= self.spec.context_length:
            raise BundleError("the prompt is " + str(len(ids)) + " tokens, the context holds "
                              + str(self.spec.context_length) + "; shorten it (at least one token must fit after it)")
        return ids

    def stream(self, request: GenerationRequest, on_done: Optional[Callable[[Generation], None]] = None) -> Iterator[Token]:
        """Yield tokens as they are generated (see the module docstring); ``on_done`` gets the record."""
        if isinstance(request.max_new_tokens, bool) or not isinstance(request.max_new_tokens, int) \
                or request.max_new_tokens < 1:
            raise BundleError("--max-new-tokens must be at least 1, got " + repr(request.max_new_tokens))
        ids = self.prompt_ids(request)
        stops = set(self.spec.generation.eos_token_ids if request.stop_ids is None else request.stop_ids)
        max_length = min(self.spec.context_length, len(ids) + request.max_new_tokens)
        runner = make_runner(self.backend, self.spec, max_length, self.label)
        if runner is None:
            raise BundleError(self.label + ": generation needs the ort backend (onnxruntime IO binding); "
                              "run with --backend ort")
        sampler = Sampler(request.sampling)
        text = TextStream(self.codec) if self.codec is not None else None
        t0 = time.perf_counter()
        logits = runner.step(np.asarray(ids, np.int64))
        prefill_ms = (time.perf_counter() - t0) * 1000.0
        out: List[int] = []
        pieces: List[str] = []
        steps: List[float] = []
        reason = "length"
        step_ms = prefill_ms
        while True:
            token = sampler.pick(logits)
            if token in stops:
                reason = "stop"
                break
            out.append(token)
            piece = text.push(token) if text is not None else ""
            pieces.append(piece)
            yield Token(token, piece, step_ms)
            if len(out) >= request.max_new_tokens:
                break
            if runner.length >= max_length:
                reason = "context"
                break
            t0 = time.perf_counter()
            logits = runner.step(np.asarray([token], np.int64))
            step_ms = (time.perf_counter() - t0) * 1000.0
            steps.append(step_ms)
        if on_done is not None:
            on_done(Generation(ids, out, "".join(pieces), reason, prefill_ms, steps, runner.cache_bytes()))

    def generate(self, request: GenerationRequest, on_token: Optional[Callable[[Token], None]] = None) -> Generation:
        """Run ``stream`` to the end; ``on_token`` sees each token as it comes."""
        done: List[Generation] = []
        for token in self.stream(request, on_done=done.append):
            if on_token is not None:
                on_token(token)
        return done[0]

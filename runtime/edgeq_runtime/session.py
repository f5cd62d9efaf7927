"""``Session``: open a bundle (or a bare .onnx / .engine) and run it on the best backend here.

Opening a bundle reads its manifest, verifies every file's sha256 and checks the model against the
manifest's inputs before anything runs: a half-copied bundle or a model swapped by hand fails with a
one-line message instead of producing numbers for the wrong model. ``run`` checks each call's inputs
(names, dtypes, ranks, fixed dims) and then hands them to the backend untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Type, Union

import numpy as np

from edgeq_runtime.backends import Backend, BackendOptions, backend_class, backend_names
from edgeq_runtime.errors import BundleError
from edgeq_runtime.generate import Generation, GenerationRequest, Generator, Token
from edgeq_runtime.inputs import validate_feeds
from edgeq_runtime.manifest import MANIFEST_NAME, Manifest, TensorSpec
from edgeq_runtime.sampling import SamplingConfig

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "ort", "tensorrt")


def _file_entry_sha(manifest: Manifest, path: str) -> Optional[str]:
    for entry in manifest.files:
        if entry.path == path:
            return entry.sha256
    return None


class Session:
    """A loaded model ready to run; use as a context manager to release the engine promptly."""

    def __init__(
        self,
        path: Union[str, Path],
        backend: str = "auto",
        providers: Optional[List[str]] = None,
        threads: Optional[int] = None,
        shapes: Optional[Mapping[str, List[int]]] = None,
        cache_dir: Optional[Union[str, Path]] = None,
    ) -> None:
        self.path = Path(path)
        if backend not in BACKEND_CHOICES:
            raise BundleError("--backend " + repr(backend) + " is not one of " + ", ".join(BACKEND_CHOICES))
        if threads is not None and threads < 1:
            raise BundleError("--threads must be at least 1, got " + str(threads))
        self.manifest: Optional[Manifest] = None
        self._generator: Optional[Generator] = None
        self.model_path: Optional[Path] = None
        self.engine_path: Optional[Path] = None
        model_sha: Optional[str] = None
        calibration_cache: Optional[Path] = None

        if self.path.is_dir() or self.path.name == MANIFEST_NAME:
            bundle = self.path if self.path.is_dir() else self.path.parent
            self.manifest = Manifest.read(bundle)
            problems = self.manifest.verify(bundle)
            if problems:
                more = " (and " + str(len(problems) - 1) + " more)" if len(problems) > 1 else ""
                raise BundleError(str(bundle) + ": bundle is damaged: " + problems[0] + more)
            self.model_path = bundle / self.manifest.model
            self.engine_path = bundle / self.manifest.engine if self.manifest.engine else None
            model_sha = _file_entry_sha(self.manifest, self.manifest.model)
            cache_name = self.manifest.target.get("calibration_cache")
            if cache_name:
                calibration_cache = bundle / str(cache_name)
        elif not self.path.exists():
            raise BundleError(str(self.path) + ": no such bundle folder or model file")
        elif self.path.suffix.lower() == ".onnx":
            self.model_path = self.path
        elif self.path.suffix.lower() in (".engine", ".plan", ".trt"):
            self.engine_path = self.path
        else:
            raise BundleError(
                str(self.path) + ": expected a bundle folder (with " + MANIFEST_NAME + "), an .onnx model or a "
                "TensorRT .engine"
            )

        self.backend_name = self._choose_backend(backend)
        options = BackendOptions(
            providers=list(providers) if providers else None,
            threads=threads,
            target=dict(self.manifest.target) if self.manifest else {},
            shapes={k: list(v) for k, v in (shapes or {}).items()},
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
            model_sha256=model_sha,
            calibration_cache=calibration_cache,
        )
        self.threads = threads
        cls = backend_class(self.backend_name)
        model_for_backend = self.model_path
        engine_for_backend = self.engine_path if self.backend_name == "tensorrt" else None
        self._backend: Optional[Backend] = cls(model_for_backend, engine_for_backend, options)
        try:
            self.inputs: List[TensorSpec] = self._check_against_manifest(self._backend.inputs, "inputs")
            self.outputs: List[TensorSpec] = self._check_against_manifest(self._backend.outputs, "outputs")
        except BaseException:
            self.close()
            raise
        self.providers: List[str] = list(self._backend.providers)

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def model_name(self) -> str:
        if self.manifest is not None:
            return self.path.resolve().name if self.path.is_dir() else self.path.resolve().parent.name
        return self.path.name

    def _choose_backend(self, requested: str) -> str:
        if requested != "auto":
            reason = backend_class(requested).unavailable_reason()
            if reason:
                raise BundleError(reason)
            if requested == "ort" and self.model_path is None:
                raise BundleError(str(self.path) + ": a TensorRT engine runs only with --backend tensorrt")
            return requested
        wants_trt = self.model_path is None or (
            self.manifest is not None and (self.manifest.target.get("backend") == "tensorrt" or self.manifest.engine)
        )
        order = ["tensorrt", "ort"] if wants_trt else ["ort", "tensorrt"]
        if self.model_path is None:
            order = ["tensorrt"]
        reasons = []
        for name in order:
            if name not in backend_names():
                continue
            reason = backend_class(name).unavailable_reason()
            if reason is None:
                if wants_trt and name != "tensorrt":
                    log.info("tensorrt is not installed here; running %s with onnxruntime", self.path)
                return name
            reasons.append(reason)
        raise BundleError(reasons[0] if reasons else "no backend available")

    def _check_against_manifest(self, actual: List[TensorSpec], kind: str) -> List[TensorSpec]:
        """A bundle's model must have exactly the manifest's tensors; the manifest's specs are the contract."""
        if self.manifest is None:
            return list(actual)
        declared: List[TensorSpec] = self.manifest.inputs if kind == "inputs" else self.manifest.outputs
        if sorted(s.name for s in actual) != sorted(s.name for s in declared):
            raise BundleError(
                str(self.path) + ": the model's " + kind + " (" + ", ".join(s.name for s in actual) + ") differ from "
                + MANIFEST_NAME + " (" + ", ".join(s.name for s in declared) + ")"
            )
        by_name = {s.name: s for s in actual}
        for spec in declared:
            got = by_name[spec.name]
            if got.dtype != spec.dtype or got.rank != spec.rank:
                raise BundleError(
                    str(self.path) + ": " + kind[:-1] + " " + repr(spec.name) + " is " + got.dtype + " rank "
                    + str(got.rank) + " in the model but " + spec.dtype + " rank " + str(spec.rank) + " in "
                    + MANIFEST_NAME
                )
        return list(declared)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Validate ``feeds`` against the inputs and run one inference; returns outputs by name."""
        if self._backend is None:
            raise BundleError(str(self.path) + ": session is closed")
        checked = validate_feeds(feeds, self.inputs, str(self.path))
        return self._backend.run(checked)

    def run_unchecked(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``run`` without validation, for timing loops over feeds already validated once."""
        if self._backend is None:
            raise BundleError(str(self.path) + ": session is closed")
        return self._backend.run(feeds)

    def generator(self) -> Generator:
        """The generation loop for a decoder bundle (made once: it loads the tokenizer)."""
        if self._generator is None:
            bundle = self.path if self.path.is_dir() else self.path.parent
            self._generator = Generator(self.backend, self.manifest.decoder if self.manifest else None,
                                        bundle if self.manifest else None, str(self.path))
        return self._generator

    def stream(
        self, prompt: Optional[str] = None, ids: Optional[Sequence[int]] = None, max_new_tokens: int = 64, *,
        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None,
        stop_ids: Optional[Sequence[int]] = None,
    ) -> Iterator[Token]:
        """Generate from a decoder bundle, yielding each ``Token`` as it is made (``edgeq_runtime.generate``).

        Greedy unless ``temperature`` > 0; ``stop_ids`` default to the bundle's EOS ids.
        """
        request = GenerationRequest(prompt, ids, max_new_tokens, SamplingConfig(temperature, top_k, top_p, seed),
                                    stop_ids)
        return self.generator().stream(request)

    def generate(
        self, prompt: Optional[str] = None, ids: Optional[Sequence[int]] = None, max_new_tokens: int = 64, *,
        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None,
        stop_ids: Optional[Sequence[int]] = None, on_token: Optional[Callable[[Token], None]] = None,
    ) -> Generation:
        """``stream`` run to the end: the ``Generation`` record; ``on_token`` sees each token as it comes."""
        request = GenerationRequest(prompt, ids, max_new_tokens, SamplingConfig(temperature, top_k, top_p, seed),
                                    stop_ids)
        return self.generator().generate(request, on_token)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise BundleError(str(self.path) + ": session is closed")
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

"""The KV-cache decoder export: one graph for prefill and decode, checked against torch in onnxruntime."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest

from edgeq.errors import ConfigError

torch = pytest.importorskip("torch")

from edgeq.frontends.decoder_export import decoder_feeds, decoder_to_onnx  # noqa: E402
from edgeq.frontends.llama import LlamaConfig, llama_module  # noqa: E402
from edgeq.graph.session import cpu_session  # noqa: E402

FACTORY = """
from edgeq.frontends.llama import LlamaConfig, llama_module
import torch

EDGEQ_EXPORT = {"decoder": True}


def make():
    torch.manual_seed(0)
    return llama_module(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2,
                                    num_heads=4, num_kv_heads=2, rope_theta=1e4))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random Llama exported through a ``file.py:factory`` spec (the one export of this file)."""
    from edgeq.frontends.torch import export_factory

    folder = tmp_path_factory.mktemp("decoder")
    (folder / "tiny_lm.py").write_text(textwrap.dedent(FACTORY))
    spec = f"{folder}/tiny_lm.py:make"
    result = export_factory(spec, cache_dir=folder / "cache")
    torch.manual_seed(0)
    module = llama_module(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2,
                                      num_heads=4, num_kv_heads=2, rope_theta=1e4))
    return spec, folder / "cache", result, module


def _torch(module, feeds):
    with torch.no_grad():
        return [t.numpy() for t in module(*(torch.from_numpy(v) for v in feeds.values()))]


def test_graph_layout_is_the_kv_cache_layout(exported):
    _, _, result, _ = exported
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert list(dims)[:5] == ["input_ids", "attention_mask", "position_ids",
                              "past_key_values.0.key", "past_key_values.0.value"]
    assert dims["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert dims["past_key_values.1.value"] == ["batch_size", 2, "past_sequence_length", 8]
    assert dims["logits"] == ["batch_size", "sequence_length", 97]
    assert [n for n in dims if n.startswith("present")] == [f"present.{i}.{k}" for i in range(2) for k in ("key", "value")]
    assert result.output_max_abs_diff["decode.logits"] < 1e-4


def test_prefill_then_decode_steps_match_torch(exported):
    """Shapes unlike the trace's: batch 3 with left padding, prefill 5, a 2-token step, a 1-token step."""
    _, _, result, module = exported
    session = cpu_session(result.path)
    layout = module.kv_cache_layout
    rng = np.random.default_rng(3)
    mask = np.ones((3, 5), np.int64)
    mask[2, :3] = 0
    past = None
    for length in (5, 2, 1):
        if past is not None:
            mask = np.concatenate([mask, np.ones((3, length), np.int64)], axis=1)
        feeds = decoder_feeds(layout, rng.integers(0, 97, (3, length)), mask, past)
        got, expected = session.run(None, feeds), _torch(module, feeds)
        np.testing.assert_allclose(got[0], expected[0], atol=1e-4, rtol=1e-4)
        past_len = 0 if past is None else past[0].shape[2]
        for i, present in enumerate(got[1:]):
            assert present.shape == (3, 2, past_len + length, 8)
            if past is not None:  # present = past, then the new keys/values
                np.testing.assert_array_equal(present[:, :, :past_len], past[i])
            np.testing.assert_allclose(present, expected[1 + i], atol=1e-5)
        past = got[1:]


def test_cached_export_is_reused(exported):
    from edgeq.frontends.torch import export_factory

    spec, cache, result, _ = exported
    again = export_factory(spec, cache_dir=cache)
    assert again.path == result.path and again.cache_key == result.cache_key


def test_a_module_without_a_cache_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match=r"^Linear: not a decoder with a KV cache \(it has no kv_cache_layout\)"):
        decoder_to_onnx(torch.nn.Linear(2, 2))
    from edgeq.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "enc.py").write_text('import torch\n\nEDGEQ_EXPORT = {"decoder": True}\n\n'
                                     "def make():\n    return torch.nn.Linear(2, 2)\n")
    code = main(["inspect", f"{tmp_path}/enc.py:make"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "enc.py:make: Linear: not a decoder with a KV cache" in err

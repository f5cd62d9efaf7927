"""The GGUF reader on a tiny Llama written with ``gguf.GGUFWriter``: config, quantized tensors, Q/K rows, tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from edgeq.errors import UnsupportedError  # noqa: E402
from edgeq.frontends.gguf import (  # noqa: E402
    dequantized_tensors,
    gguf_tokenizer,
    hf_state_dict,
    load_gguf_causal_lm,
    read_config,
    unpermute_qk,
)
from edgeq.frontends.llama import LlamaConfig, empty_past, llama_module  # noqa: E402

# rms_norm_eps float32-exact: GGUF stores float32.
CONFIG = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=1, num_heads=4,
                     num_kv_heads=2, rope_theta=5e4, rms_norm_eps=2.0**-20, context_length=128)
# GPT-2's byte alphabet: printable bytes map to themselves, the rest (space, control) to U+0100 up.
_PRINTABLE = [*range(33, 127), *range(161, 173), *range(174, 256)]
BYTE_CHARS = [chr(b) if b in _PRINTABLE else chr(256 + sorted(set(range(256)) - set(_PRINTABLE)).index(b))
              for b in range(256)]


def llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's ``LlamaModel.permute``, written out as llama.cpp has it."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def q8_0_reference(x: np.ndarray) -> np.ndarray:
    """Q8_0 round trip in float64: blocks of 32, scale max|x|/127 stored as float16."""
    blocks = x.astype(np.float64).reshape(-1, 32)
    scale = np.abs(blocks).max(axis=1, keepdims=True) / 127
    q = np.round(np.divide(blocks, scale, out=np.zeros_like(blocks), where=scale > 0))
    return (q * scale.astype(np.float16).astype(np.float64)).reshape(x.shape)


def _hf_weights(seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = llama_module(CONFIG)
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items() if k != "lm_head.weight"}


def write_tiny_gguf(path: Path, hf: dict[str, np.ndarray]) -> Path:
    """The HF weights as llama.cpp's converter writes them: renamed, Q/K permuted, the MLP down in Q8_0."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(CONFIG.num_layers)
    writer.add_context_length(CONFIG.context_length)
    writer.add_embedding_length(CONFIG.hidden_size)
    writer.add_feed_forward_length(CONFIG.intermediate_size)
    writer.add_head_count(CONFIG.num_heads)
    writer.add_head_count_kv(CONFIG.num_kv_heads)
    writer.add_rope_freq_base(CONFIG.rope_theta)
    writer.add_layer_norm_rms_eps(CONFIG.rms_norm_eps)
    writer.add_vocab_size(CONFIG.vocab_size)
    tokens = [*BYTE_CHARS, "Ġt", "he", "Ġthe", *(f"<extra_{i}>" for i in range(CONFIG.vocab_size - 262)),
              "<|endoftext|>", "<|im_start|>", "<|im_end|>"][: CONFIG.vocab_size]
    tokens[:3], tokens[3:6] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], tokens[:3]  # control ids 0-2
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    for ours, theirs in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                         ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                         ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                         ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]:
        names[f"model.layers.0.{ours}.weight"] = f"blk.0.{theirs}.weight"
    for name, value in hf.items():
        if name.endswith("q_proj.weight"):
            value = llama_cpp_permute(value, CONFIG.num_heads)
        elif name.endswith("k_proj.weight"):
            value = llama_cpp_permute(value, CONFIG.num_kv_heads)
        if name.endswith("down_proj.weight"):
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(names[name], gguf.quants.quantize(value, kind), raw_dtype=kind)
        else:
            writer.add_tensor(names[name], np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    hf = _hf_weights()
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", hf), hf


def test_config_comes_from_the_metadata(tiny):
    assert read_config(tiny[0]) == CONFIG


def test_quantized_and_float_tensors_round_trip(tiny):
    path, hf = tiny
    tensors = dequantized_tensors(path)
    down = hf["model.layers.0.mlp.down_proj.weight"]
    got = tensors["blk.0.ffn_down.weight"]
    assert got.shape == down.shape and got.dtype == np.float32
    step = np.abs(down).max() / 127
    assert np.abs(got - q8_0_reference(down)).max() <= 1e-3 * step  # the same codes, float16 scales
    # Quantized: within half a step, plus 127 codes times the float16 rounding of the scale.
    assert 0 < np.abs(got - down).max() <= (0.5 + 127 * 2**-11) * step
    np.testing.assert_array_equal(tensors["output_norm.weight"], hf["model.norm.weight"])


def test_unpermute_inverts_llama_cpp_and_preserves_attention_scores():
    """Interleaved-pair RoPE on the GGUF rows gives the scores half-rotation RoPE gives on HF rows."""
    rng = np.random.default_rng(0)
    heads, d, hidden, pos = 2, 8, 6, 5
    wq, wk, x = rng.standard_normal((heads * d, hidden)), rng.standard_normal((heads * d, hidden)), rng.standard_normal(hidden)
    for w in (wq, wk):
        np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, heads), heads), w)
    angle = pos * 5e4 ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(angle), np.sin(angle)

    def half(v):  # transformers: rotate (v[:d/2], v[d/2:])
        a, b = v[: d // 2], v[d // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin])

    def pairs(v):  # llama.cpp: rotate (v[0], v[1]), (v[2], v[3]), ...
        a, b = v[0::2], v[1::2]
        return np.stack([a * cos - b * sin, b * cos + a * sin], axis=1).reshape(-1)

    def scores(wq, wk, rope):
        q, k = (wq @ x).reshape(heads, d), (wk @ x).reshape(heads, d)
        return np.array([rope(q[h]) @ rope(k[h]) for h in range(heads)])

    np.testing.assert_allclose(scores(llama_cpp_permute(wq, heads), llama_cpp_permute(wk, heads), pairs),
                               scores(wq, wk, half), rtol=1e-12)


def test_the_module_read_from_gguf_computes_the_hf_model(tiny):
    path, hf = tiny
    module = load_gguf_causal_lm(path)
    reference_state = {k: torch.from_numpy(v) for k, v in hf_state_dict(dequantized_tensors(path), CONFIG).items()}
    # The same dequantized weights in HF layout, loaded directly: the read must not have moved a row.
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
        np.testing.assert_array_equal(reference_state[name].numpy(), hf[name])
    reference = llama_module(CONFIG, {**{k: torch.from_numpy(v) for k, v in hf.items()},
                                      "model.layers.0.mlp.down_proj.weight": reference_state[
                                          "model.layers.0.mlp.down_proj.weight"],
                                      "lm_head.weight": torch.from_numpy(hf["model.embed_tokens.weight"])})
    ids = torch.tensor([[5, 17, 200, 3, 42]])
    args = (ids, torch.ones_like(ids), torch.arange(5)[None], *empty_past(module.kv_cache_layout))
    with torch.no_grad():
        np.testing.assert_array_equal(module(*args)[0].numpy(), reference(*args)[0].numpy())


def test_tokenizer_from_metadata(tiny):
    tokenizer, info = gguf_tokenizer(tiny[0])
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    encoding = tokenizer.encode("the the 42<|im_end|>")
    assert encoding.tokens[:3] == ["t", "he", "Ġthe"]  # merges applied in rank order
    assert encoding.tokens[-3:] == ["4", "2", "<|im_end|>"]  # digits one by one; a control token whole
    assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == "the the 42<|im_end|>"


def test_other_architectures_are_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedError, match=r"architecture 'gpt2'; only 'llama' is read"):
        read_config(tmp_path / "gpt2.gguf")

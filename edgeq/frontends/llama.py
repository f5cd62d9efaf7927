"""A small float Llama causal LM in torch, written for a clean ONNX export with a KV cache.

Why our own module and not transformers' ``LlamaForCausalLM``: transformers keeps the cache in
``DynamicCache`` objects whose export needs pytree registrations that change between releases,
and it would make transformers (and accelerate) a dependency of reading one GGUF file. The
architecture is small — RMSNorm, rotary embeddings on half-rotated head dimensions, grouped-query
attention, a SwiGLU MLP — and writing it here keeps the graph's inputs exactly the layout the
decoder exporter serves (``edgeq.frontends.decoder_export``): ``forward(input_ids,
attention_mask, position_ids, *past)`` with ``past`` flat as ``key0, value0, key1, value1, ...``
returning ``(logits, *present)`` in the same order.

Parameter names follow transformers' (``model.layers.0.self_attn.q_proj.weight``), so the nodes
the exporter names after modules read the way users of the HF checkpoint expect, and a HF state
dict loads with ``strict=True``. Attention is written as MatMul / Softmax / MatMul rather than
``scaled_dot_product_attention`` so the exported graph holds plain MatMuls a quantizer can see.
torch is imported only when a module is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class LlamaConfig:
    """The numbers that fix a Llama-architecture decoder (read from GGUF metadata or given)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    context_length: int = 2048
    tie_word_embeddings: bool = True

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class KVCacheLayout:
    """What a decoder module declares (as ``module.kv_cache_layout``) to be exported with a KV cache."""

    num_layers: int
    num_kv_heads: int
    head_size: int


@cache
def _classes() -> dict[str, type]:
    """Module classes are defined on first use so that importing this file does not import torch."""
    import torch
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self, size: int, eps: float) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(size))
            self.eps = eps

        def forward(self, x: Any) -> Any:
            variance = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(variance + self.eps))

    def rotate_half(x: Any) -> Any:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class Attention(nn.Module):
        def __init__(self, cfg: LlamaConfig) -> None:
            super().__init__()
            self.cfg = cfg
            d = cfg.head_size
            self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * d, bias=False)
            self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * d, bias=False)
            self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * d, bias=False)
            self.o_proj = nn.Linear(cfg.num_heads * d, cfg.hidden_size, bias=False)

        def forward(self, x: Any, cos: Any, sin: Any, mask: Any, past_k: Any, past_v: Any) -> Any:
            cfg, (b, s, _) = self.cfg, x.shape
            d = cfg.head_size
            q = self.q_proj(x).view(b, s, cfg.num_heads, d).transpose(1, 2)
            k = self.k_proj(x).view(b, s, cfg.num_kv_heads, d).transpose(1, 2)
            v = self.v_proj(x).view(b, s, cfg.num_kv_heads, d).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            groups = cfg.num_heads // cfg.num_kv_heads
            k_all = k.repeat_interleave(groups, dim=1)
            v_all = v.repeat_interleave(groups, dim=1)
            scores = torch.matmul(q, k_all.transpose(2, 3)) * (d**-0.5) + mask
            out = torch.matmul(torch.softmax(scores, dim=-1), v_all)
            return self.o_proj(out.transpose(1, 2).reshape(b, s, cfg.num_heads * d)), k, v

    class MLP(nn.Module):
        def __init__(self, cfg: LlamaConfig) -> None:
            super().__init__()
            self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
            self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
            self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

        def forward(self, x: Any) -> Any:
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    class DecoderLayer(nn.Module):
        def __init__(self, cfg: LlamaConfig) -> None:
            super().__init__()
            self.self_attn = Attention(cfg)
            self.mlp = MLP(cfg)
            self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

        def forward(self, x: Any, cos: Any, sin: Any, mask: Any, past_k: Any, past_v: Any) -> Any:
            attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v)
            x = x + attn
            return x + self.mlp(self.post_attention_layernorm(x)), k, v

    class LlamaModel(nn.Module):
        def __init__(self, cfg: LlamaConfig) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    class LlamaForCausalLM(nn.Module):
        """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)``."""

        def __init__(self, cfg: LlamaConfig) -> None:
            super().__init__()
            self.config = cfg
            self.kv_cache_layout = KVCacheLayout(cfg.num_layers, cfg.num_kv_heads, cfg.head_size)
            self.model = LlamaModel(cfg)
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            if cfg.tie_word_embeddings:
                self.lm_head.weight = self.model.embed_tokens.weight
            d = cfg.head_size
            inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> Any:
            s = input_ids.shape[1]
            past_len = past[0].shape[2]
            freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq
            emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [batch, 1, seq, head_size]
            cos, sin = emb.cos(), emb.sin()
            # Query i (absolute position past_len + i) sees key j when j <= past_len + i and the
            # attention mask keeps j. A finite minimum, not -inf: a fully masked (padding) row
            # then softmaxes to a uniform row instead of NaN.
            keys = torch.arange(past_len + s, device=input_ids.device)
            queries = torch.arange(s, device=input_ids.device) + past_len
            allowed = (keys[None, :] <= queries[:, None])[None, None] & attention_mask.bool()[:, None, None, :]
            mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                ~allowed, torch.finfo(torch.float32).min
            )
            x = self.model.embed_tokens(input_ids)
            present = []
            for i, layer in enumerate(self.model.layers):
                x, k, v = layer(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
                present += [k, v]
            return (self.lm_head(self.model.norm(x)), *present)

    return {"LlamaForCausalLM": LlamaForCausalLM}


def llama_module(config: LlamaConfig, state_dict: dict[str, Any] | None = None) -> Any:
    """A float32 ``LlamaForCausalLM`` in eval mode; with ``state_dict``, loaded with ``strict=True``."""
    module = _classes()["LlamaForCausalLM"](config)
    if state_dict is not None:
        module.load_state_dict(state_dict, strict=True)
    return module.eval()


def empty_past(layout: KVCacheLayout, batch: int = 1) -> list[Any]:
    """The flat ``key0, value0, ...`` past of length 0 that a prefill is called with."""
    import torch

    shape = (batch, layout.num_kv_heads, 0, layout.head_size)
    return [torch.zeros(shape) for _ in range(2 * layout.num_layers)]

"""One decoder for Qwen3, Qwen2 and Llama (SmolLM2) checkpoints, switched by ``ModelArch``.

Parameter names follow the Hugging Face checkpoints except for the fused projections, which
``packed_modules_mapping`` maps back (``q_proj`` -> shard ``"q"`` of ``qkv_proj``, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from vortex_rl.rollout.forward_batch import ForwardBatch
from vortex_rl.rollout.layers.activation import SiluAndMul
from vortex_rl.rollout.layers.attention import Attention
from vortex_rl.rollout.layers.embedding import LMHead, VocabEmbedding
from vortex_rl.rollout.layers.linear import Linear, MergedLinear, QKVLinear
from vortex_rl.rollout.layers.norm import RMSNorm
from vortex_rl.rollout.layers.rotary import RotaryEmbedding, apply_rotary
from vortex_rl.rollout.models.arch import ModelArch
from vortex_rl.sparse import FlowRunner


class DecoderAttention(nn.Module):
    def __init__(self, arch: ModelArch, layer_idx: int, flow_runner: FlowRunner):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = arch.num_heads, arch.num_kv_heads, arch.head_dim
        self.qkv_proj = QKVLinear(arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim,
                                  bias=arch.qkv_bias)
        self.o_proj = Linear(arch.num_heads * arch.head_dim, arch.hidden_size, bias=arch.o_bias)
        self.q_norm = RMSNorm(arch.head_dim, arch.rms_norm_eps) if arch.qk_norm else None
        self.k_norm = RMSNorm(arch.head_dim, arch.rms_norm_eps) if arch.qk_norm else None
        self.attn = Attention(layer_idx, arch.num_heads, arch.num_kv_heads, arch.head_dim, flow_runner)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], batch: ForwardBatch):
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split(self.qkv_proj.output_sizes, dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.reshape(num_tokens, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, *cos_sin), apply_rotary(k, *cos_sin)
        o = self.attn(q.contiguous(), k.contiguous(), v.contiguous(), batch)
        return self.o_proj(o.reshape(num_tokens, self.num_heads * self.head_dim))


class DecoderMLP(nn.Module):
    def __init__(self, arch: ModelArch):
        super().__init__()
        size = arch.intermediate_size
        self.gate_up_proj = MergedLinear(arch.hidden_size, [size, size], bias=arch.mlp_bias)
        self.down_proj = Linear(size, arch.hidden_size, bias=arch.mlp_bias)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, arch: ModelArch, layer_idx: int, flow_runner: FlowRunner):
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = DecoderAttention(arch, layer_idx, flow_runner)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = DecoderMLP(arch)

    def forward(self, h: torch.Tensor, cos_sin, batch: ForwardBatch) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos_sin, batch)
        return h + self.mlp(self.post_attention_layernorm(h))


class DecoderModel(nn.Module):
    def __init__(self, arch: ModelArch, flow_runner: FlowRunner, max_positions: int):
        super().__init__()
        self.embed_tokens = VocabEmbedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(arch, i, flow_runner) for i in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(arch.head_dim, max_positions, arch.rope,
                                          max_position_embeddings=arch.max_position_embeddings)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        cos_sin = self.rotary_emb.cos_sin(positions, h.dtype)
        for layer in self.layers:
            h = layer(h, cos_sin, batch)
        return self.norm(h)


class DecoderForCausalLM(nn.Module):
    """input ids ``[num_tokens]`` and positions ``[num_tokens]`` -> hidden ``[num_tokens, hidden]``;
    ``compute_logits(hidden [rows, hidden]) -> [rows, vocab]`` float32."""

    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, arch: ModelArch, flow_runner: FlowRunner, max_positions: int):
        super().__init__()
        self.arch = arch
        self.model = DecoderModel(arch, flow_runner, max_positions)
        tie = self.model.embed_tokens if arch.tie_word_embeddings else None
        self.lm_head = LMHead(arch.vocab_size, arch.hidden_size, tie_to=tie)

    @property
    def tied_weight_names(self) -> tuple[str, ...]:
        """Checkpoint names that alias another parameter (ignored when loading)."""
        return ("lm_head.weight",) if self.arch.tie_word_embeddings else ()

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.model(input_ids, positions, batch)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

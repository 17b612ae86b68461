"""Paged attention: dense causal prefill with SDPA, decode through the sparse ``FlowRunner``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vortex_rl.rollout.forward_batch import ForwardBatch
from vortex_rl.sparse import FlowRunner


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of the last ``len(q)`` positions of a sequence over its ``len(k)`` keys.

    q: ``[q_len, q_heads, head_dim]``; k, v: ``[kv_len, kv_heads, head_dim]`` with ``kv_len >= q_len``
    (the cached prefix first). Returns ``[q_len, q_heads, head_dim]``.
    """
    q_len, q_heads, _ = q.shape
    kv_len, kv_heads, _ = k.shape
    if q_heads != kv_heads:
        k = k.repeat_interleave(q_heads // kv_heads, dim=1)
        v = v.repeat_interleave(q_heads // kv_heads, dim=1)
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    if kv_len == q_len:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        # Bottom-right aligned causal mask: query i sits at position kv_len - q_len + i.
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=q.device).tril(diagonal=kv_len - q_len)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return o[0].transpose(0, 1)


class Attention(nn.Module):
    """Attention of one layer over the paged KV cache.

    ``cache`` (set by the model runner) holds this layer's ``k``/``v``
    ``[num_pages, kv_heads, page_size, head_dim]`` and the flow's per-page state.
    """

    def __init__(self, layer_idx: int, num_heads: int, num_kv_heads: int, head_dim: int, flow_runner: FlowRunner):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim ** -0.5
        self.flow_runner = flow_runner
        self.cache: dict[str, torch.Tensor] | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """q: ``[num_tokens, heads, head_dim]``; k, v: ``[num_tokens, kv_heads, head_dim]`` -> o like q."""
        if self.cache is None:
            raise RuntimeError("the KV cache is not allocated (engine asleep?)")
        self.flow_runner.write(k, v, self.cache, batch.slot_mapping, batch.flow_ctx)
        if batch.is_prefill:
            return self._prefill(q, k, v, batch)
        o, _ = self.flow_runner.decode(q, self.cache, batch.flow_ctx, layer=self.layer_idx)
        return o

    def _prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        outputs, start = [], 0
        for q_len, prefix in zip(batch.query_lens, batch.prefix_index):
            end = start + q_len
            k_seq, v_seq = k[start:end], v[start:end]
            if prefix is not None:
                pages, offsets = prefix
                k_seq = torch.cat([self.cache["k"][pages, :, offsets], k_seq])
                v_seq = torch.cat([self.cache["v"][pages, :, offsets], v_seq])
            outputs.append(causal_attention(q[start:end], k_seq, v_seq, self.scale))
            start = end
        return torch.cat(outputs)

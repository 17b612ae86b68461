"""StreamingLLM-style attention (Xiao et al., 2023): sink pages plus a window of the most recent pages."""

from __future__ import annotations

import torch

from vortex_rl.sparse.flow import register, vFlow
from vortex_rl.sparse.ops import topK
from vortex_rl.sparse.vtensor import RAGGED, vTensor


@register("streaming")
class Streaming(vFlow):
    """Fills the budget with the most recent pages: a page's score is its position."""

    def __init__(self):
        self.output_func = topK()

    def forward_indexer(self, q, o, cache, ctx):
        position = torch.arange(ctx.max_pages, device=q.device, dtype=torch.float32)
        score = vTensor(position.expand(ctx.batch, ctx.num_kv_heads, ctx.max_pages), RAGGED)
        self.output_func(score, o, ctx=ctx)

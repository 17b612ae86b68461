"""Block-sparse attention (the Vortex write-up's example): mean-key centroids, group-averaged query."""

from __future__ import annotations

from vortex_rl.sparse.backend import FusedKernel, declare_fused_kernels
from vortex_rl.sparse.flow import register, vFlow
from vortex_rl.sparse.ops import GeMV, Mean, topK


@register("block_sparse_attention")
class BlockSparseAttention(vFlow):
    """Score each page by ``mean(q over the group) . mean(keys of the page)`` and keep the top pages."""

    def __init__(self):
        self.gemv = GeMV()
        self.output_func = topK()
        self.reduction = Mean()

    def create_cache(self, page_size, head_dim):
        return {"centroids": (1, head_dim)}

    def forward_cache(self, cache, loc, ctx):
        self.reduction(cache["k"], cache["centroids"], loc=loc, ctx=ctx)

    def forward_indexer(self, q, o, cache, ctx):
        q_mean = q.mean(dim=2)  # [batch, kv_heads, head_dim]
        score = self.gemv(q_mean, cache["centroids"], ctx=ctx)
        self.output_func(score, o, ctx=ctx)


def _index(kernel, q, cache, ctx):
    return kernel(q, cache["centroids"], ctx.page_table, ctx.seq_lens, ctx.budgets, sink_pages=ctx.sink_pages,
                  local_pages=ctx.local_pages, max_budget=ctx.max_budget, page_size=ctx.page_size,
                  **ctx.kernel_kwargs())


def _append(kernel, k, v, cache, loc, **kernel_kwargs):
    kernel(k, v, cache["k"], cache["v"], cache["centroids"], loc, **kernel_kwargs)


declare_fused_kernels(
    "block_sparse_attention",
    indexer=FusedKernel("block_sparse_indexer", _index),
    append=FusedKernel("append_kv_and_centroids", _append),
)

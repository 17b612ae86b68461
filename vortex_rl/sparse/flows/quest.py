"""Quest (Tang et al., 2024): per-page channel-wise min/max keys bound each page's best score."""

from __future__ import annotations

from vortex_rl.sparse.flow import register, vFlow
from vortex_rl.sparse.ops import Add, GeMV, Max, Min, Sum, topK


@register("quest")
class Quest(vFlow):
    """Upper bound of ``q . k`` over a page: ``sum_d max(q_d kmin_d, q_d kmax_d)``, summed over the
    query heads of a group, written as ``relu(q) . kmax + min(q, 0) . kmin``."""

    def __init__(self):
        self.page_max = Max()
        self.page_min = Min()
        self.gemv = GeMV()
        self.add = Add()
        self.group_sum = Sum(dim=2)
        self.output_func = topK()

    def create_cache(self, page_size, head_dim):
        return {"kmax": (1, head_dim), "kmin": (1, head_dim)}

    def forward_cache(self, cache, loc, ctx):
        self.page_max(cache["k"], cache["kmax"], loc=loc, ctx=ctx)
        self.page_min(cache["k"], cache["kmin"], loc=loc, ctx=ctx)

    def forward_indexer(self, q, o, cache, ctx):
        bound = self.add(
            self.gemv(q.clamp(min=0), cache["kmax"], ctx=ctx),  # [batch, kv_heads, group, max_pages]
            self.gemv(q.clamp(max=0), cache["kmin"], ctx=ctx),
        )
        self.output_func(self.group_sum(bound), o, ctx=ctx)

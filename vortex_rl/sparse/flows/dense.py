"""Dense decode attention, as a flow so configs can name it."""

from __future__ import annotations

from vortex_rl.sparse.flow import register, vFlow


@register("dense")
class Dense(vFlow):
    """Every page of every request; the runner skips selection and runs the dense kernel."""

    is_dense = True

    def forward_indexer(self, q, o, cache, ctx):
        raise RuntimeError("the dense flow selects no pages; FlowRunner runs dense attention directly")

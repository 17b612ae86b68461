"""`ForwardBatch`: the per-step metadata every attention layer reads, planned once per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.sparse import FlowContext


@dataclass
class ForwardBatch:
    """What the attention layers need to know about one forward step.

    Attributes
    ----------
    is_prefill: prefill (dense causal attention over each sequence's prefix and chunk) or decode (one
        token per sequence through the flow).
    slot_mapping: ``[num_tokens]`` int64 cache slot (``page * page_size + offset``) of every input token.
    flow_ctx: decode only: the ``FlowContext`` from ``FlowRunner.plan`` (page table, lengths, budgets).
    query_lens: prefill only: tokens of each sequence in this step, in input order (host ints).
    prefix_index: prefill only: per sequence, ``None`` when nothing is cached before its chunk, else
        ``(pages, offsets)`` ``[prefix_len]`` int64 locating its cached tokens in the paged cache.
    """

    is_prefill: bool
    slot_mapping: torch.Tensor
    flow_ctx: FlowContext | None = None
    query_lens: list[int] | None = None
    prefix_index: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None

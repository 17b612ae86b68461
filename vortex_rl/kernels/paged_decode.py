"""Decode attention over a paged KV cache: plain-torch references.

Layout shared by every decode kernel in this package:

- ``q``: ``[batch, q_heads, head_dim]``, one query token per request; query head ``h`` reads KV head
  ``h // (q_heads // kv_heads)`` (GQA).
- ``k_cache``, ``v_cache``: ``[num_pages, kv_heads, page_size, head_dim]``; token ``t`` of a request lives
  in physical page ``page_table[b, t // page_size]`` at slot ``t % page_size``.
- ``page_table``: ``[batch, max_pages]`` int32, physical page ids in logical order, ``-1`` padding.
- ``seq_lens``: ``[batch]`` int32, tokens in the cache per request (the query's own token included).
- ``page_ids``: ``[batch, kv_heads, budget]`` int32, *logical* page indices (positions in the request's
  page table) to attend to per (request, KV head); ``-1`` entries are skipped wherever they stand.

Outputs are ``o: [batch, q_heads, head_dim]`` (dtype of ``q``) and ``lse: [batch, q_heads]`` float32,
the natural-log log-sum-exp of the scaled scores (``-inf`` when no token is attended).
"""

from __future__ import annotations

import math

import torch


def check_decode_inputs(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    page_ids: torch.Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the offending argument when shapes or dtypes do not fit."""
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, q_heads, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            "k_cache and v_cache must both be [num_pages, kv_heads, page_size, head_dim], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    batch, q_heads, head_dim = q.shape
    _, kv_heads, _, cache_dim = k_cache.shape
    if cache_dim != head_dim:
        raise ValueError(f"q head_dim {head_dim} does not match the cache head_dim {cache_dim}")
    if q_heads % kv_heads != 0:
        raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({kv_heads})")
    if q.dtype != k_cache.dtype or k_cache.dtype != v_cache.dtype:
        raise ValueError(
            f"q, k_cache and v_cache must share a dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    if page_table.dim() != 2 or page_table.shape[0] != batch:
        raise ValueError(f"page_table must be [batch={batch}, max_pages], got {tuple(page_table.shape)}")
    if seq_lens.shape != (batch,):
        raise ValueError(f"seq_lens must be [batch={batch}], got {tuple(seq_lens.shape)}")
    for name, t in (("page_table", page_table), ("seq_lens", seq_lens)):
        if t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")
    if page_ids is not None:
        if page_ids.dim() != 3 or page_ids.shape[:2] != (batch, kv_heads):
            raise ValueError(
                f"page_ids must be [batch={batch}, kv_heads={kv_heads}, budget], got {tuple(page_ids.shape)}"
            )
        if page_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"page_ids must be int32 or int64, got {page_ids.dtype}")


def all_page_ids(page_table: torch.Tensor, seq_lens: torch.Tensor, kv_heads: int, page_size: int) -> torch.Tensor:
    """Logical ids of every page of every request, ``-1`` past the last page.

    Returns ``[batch, kv_heads, max_pages]`` int32.
    """
    batch, max_pages = page_table.shape
    ids = torch.arange(max_pages, device=page_table.device, dtype=torch.int32).expand(batch, max_pages)
    num_pages = (seq_lens.to(torch.int32) + page_size - 1) // page_size
    ids = torch.where(ids < num_pages[:, None], ids, torch.full_like(ids, -1))
    return ids[:, None, :].expand(batch, kv_heads, max_pages).contiguous()


def sparse_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    page_ids: torch.Tensor,
    *,
    sm_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention restricted to a per-(request, KV head) list of logical pages (fp32 math).

    Returns ``(o, lse)``: ``o`` ``[batch, q_heads, head_dim]`` in ``q.dtype``, ``lse`` ``[batch, q_heads]``
    float32 (natural log). A page listed twice is attended twice; callers pass sets.
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens, page_ids)
    batch, q_heads, head_dim = q.shape
    kv_heads, page_size = k_cache.shape[1], k_cache.shape[2]
    group = q_heads // kv_heads
    budget = page_ids.shape[-1]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(head_dim)

    page_ids = page_ids.long()
    listed = page_ids >= 0
    logical = page_ids.clamp(min=0)
    physical = torch.gather(page_table.long(), 1, logical.view(batch, -1)).view(batch, kv_heads, budget)
    physical = physical.clamp(min=0)
    head = torch.arange(kv_heads, device=q.device)[None, :, None]
    keys = k_cache[physical, head].float()  # [batch, kv_heads, budget, page_size, head_dim]
    values = v_cache[physical, head].float()
    token = logical[..., None] * page_size + torch.arange(page_size, device=q.device)
    valid = listed[..., None] & (token < seq_lens.long()[:, None, None, None])  # [b, kv, budget, ps]

    qg = q.float().view(batch, kv_heads, group, head_dim)
    keys = keys.reshape(batch, kv_heads, budget * page_size, head_dim)
    values = values.reshape(batch, kv_heads, budget * page_size, head_dim)
    scores = torch.einsum("bhgd,bhtd->bhgt", qg, keys) * scale
    scores = scores.masked_fill(~valid.reshape(batch, kv_heads, 1, -1), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [b, kv, g]
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    probs = torch.exp(scores - lse_safe[..., None])
    o = torch.einsum("bhgt,bhtd->bhgd", probs, values)
    return o.reshape(batch, q_heads, head_dim).to(q.dtype), lse.reshape(batch, q_heads)


def dense_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    sm_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over every cached token of each request. Same outputs as the sparse reference."""
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens)
    ids = all_page_ids(page_table, seq_lens, k_cache.shape[1], k_cache.shape[2])
    return sparse_decode_attention_ref(q, k_cache, v_cache, page_table, seq_lens, ids, sm_scale=sm_scale)

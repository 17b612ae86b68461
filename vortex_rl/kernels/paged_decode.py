"""Decode attention over a paged KV cache: plain-torch references.

Layout shared by every decode kernel in this package:

- ``q``: ``[batch, q_heads, head_dim]``, one query token per request; query head ``h`` reads KV head
  ``h // (q_heads // kv_heads)`` (GQA).
- ``k_cache``, ``v_cache``: ``[num_pages, kv_heads, page_size, head_dim]``; token ``t`` of a request lives
  in physical page ``page_table[b, t // page_size]`` at slot ``t % page_size``.
- ``page_table``: ``[batch, max_pages]`` int32, physical page ids in logical order, ``-1`` padding.
- ``seq_lens``: ``[batch]`` int32, tokens in the cache per request (the query's own token included).
- ``pages``: ``[batch, kv_heads, budget]`` int32, *physical* page ids to attend to per (request, KV
  head), as the indexers write them; ``-1`` entries are skipped wherever they stand. Every page is
  full except the request's last, ``page_table[b, ceil(seq_lens[b] / page_size) - 1]``, whose first
  ``seq_lens[b] - (num_pages - 1) * page_size`` slots are valid; so the kernel never reads the page
  table inside its loop.
- ``list_lens`` (optional): ``[batch]`` int32, how many leading entries of each request's page list
  may hold a page; entries from there on are not read. The engine passes each request's budget: a
  page list sized for a larger budget (the budget guard's engines) then costs what a list of the
  request's own budget costs, and splits the same way.

Outputs are ``o: [batch, q_heads, head_dim]`` (dtype of ``q``) and ``lse: [batch, q_heads]`` float32,
the natural-log log-sum-exp of the scaled scores (``-inf`` when no token is attended).

The Triton kernel packs the query heads of a GQA group into the rows of one ``tl.dot`` tile and walks
the page list in blocks of whole pages with an online softmax (fp32 state). The dense kernel walks the
page table row itself, the sparse one the physical page list: either way the ids of the next block are
loaded one step ahead into registers, so no load of a step waits on another load of the same step and
the software pipeline keeps ``num_stages - 1`` K/V tiles in flight. When ``batch * kv_heads``
programs cannot fill the GPU, the page list is split across programs and the partial states are merged
(:mod:`vortex_rl.kernels.split_kv`): the grid comes from shapes, each request's share of it from its
length, on the device.
"""

import math
from dataclasses import dataclass

import torch

from vortex_rl.kernels._triton import launch, next_pow2, require_triton, tl, triton, unit_stride
from vortex_rl.kernels.page_lists import (  # noqa: F401 - all_page_ids, all_pages: part of this module's API
    all_page_ids, all_pages, check_decode_inputs, listed_prefix, page_token_mask,
)
from vortex_rl.kernels.split_kv import (
    MIN_BLOCKS_PER_SPLIT,
    choose_num_splits,
    finish_splits,
    grid_splits,
    split_outputs,
)


def sparse_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    pages: torch.Tensor,
    *,
    sm_scale: float | None = None,
    list_lens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention restricted to a per-(request, KV head) list of physical pages (fp32 math).

    Returns ``(o, lse)``: ``o`` ``[batch, q_heads, head_dim]`` in ``q.dtype``, ``lse`` ``[batch, q_heads]``
    float32 (natural log). A page listed twice is attended twice; callers pass sets. ``list_lens``: see
    the module docstring.
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens, pages, list_lens)
    pages = listed_prefix(pages, list_lens)
    batch, q_heads, head_dim = q.shape
    kv_heads, page_size = k_cache.shape[1], k_cache.shape[2]
    group = q_heads // kv_heads
    budget = pages.shape[-1]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(head_dim)

    pages = pages.long()
    physical = pages.clamp(min=0)
    head = torch.arange(kv_heads, device=q.device)[None, :, None]
    keys = k_cache[physical, head].float()  # [batch, kv_heads, budget, page_size, head_dim]
    values = v_cache[physical, head].float()
    valid = page_token_mask(pages, page_table, seq_lens, page_size)  # [b, kv, budget, ps]

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
    pages = all_pages(page_table, seq_lens, k_cache.shape[1], k_cache.shape[2])
    return sparse_decode_attention_ref(q, k_cache, v_cache, page_table, seq_lens, pages, sm_scale=sm_scale)


# ------------------------------------------------------------------------------------------------- kernel
@triton.jit
def _online_softmax_step(q, k, v, tok_ok, m_i, l_i, acc, sm_scale_log2, DOT_PRECISION: tl.constexpr):
    """Fold one block of keys/values into the running (max, sum, accumulator), base-2 exponent."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * sm_scale_log2
    s = tl.where(tok_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all masked so far: no nan
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, page_table_ptr, seq_lens_ptr, pages_ptr, list_lens_ptr, o_ptr, lse_ptr,
    sm_scale_log2, kv_heads, group, head_dim, num_entries,
    stride_qb, stride_qh, stride_kp, stride_kh, stride_ks, stride_vp, stride_vh, stride_vs,
    stride_ptb, stride_pb, stride_ph, stride_ob, stride_oh, stride_os, stride_lb, stride_lh, stride_ls,
    SPARSE: tl.constexpr, HAS_LIST_LENS: tl.constexpr, PAGE_SIZE: tl.constexpr, PAGES_PER_BLOCK: tl.constexpr,
    MIN_BLOCKS_PER_SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    b = tl.program_id(0) // kv_heads
    h = tl.program_id(0) % kv_heads
    split = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + b).to(tl.int32)
    n = (seq_len + PAGE_SIZE - 1) // PAGE_SIZE
    # Every page but the request's last is full, so one scalar (the last page's physical id) is all
    # the kernel needs to mask tokens: no logical position, no page-table lookup per block.
    last_page = tl.load(page_table_ptr + b * stride_ptb + tl.maximum(n - 1, 0), mask=n > 0, other=-1).to(tl.int32)
    last_fill = seq_len - (n - 1) * PAGE_SIZE
    # Split-KV sized here, from the request's real length: the grid (num_splits) is fixed by shapes,
    # and each request spreads its own blocks over as many splits as it has work for; the others
    # write an empty state (lse -inf), which the merge ignores.
    width = num_entries
    if not SPARSE:  # the page list is the page table row: stop at the request's last page
        width = tl.minimum(width, n)
    if HAS_LIST_LENS:  # entries past the request's own budget hold no page: do not walk them
        width = tl.maximum(tl.minimum(width, tl.load(list_lens_ptr + b).to(tl.int32)), 0)
    blocks = tl.cdiv(width, PAGES_PER_BLOCK)
    splits = tl.maximum(1, tl.minimum(tl.num_programs(1), tl.cdiv(blocks, MIN_BLOCKS_PER_SPLIT)))
    per_split = tl.cdiv(blocks, splits) * PAGES_PER_BLOCK  # whole blocks: none straddles two splits
    start = split * per_split
    end = tl.minimum(start + per_split, width)
    end = tl.where((n > 0) & (split < splits), end, start)  # an empty request attends to nothing

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gd_mask = (g < group)[:, None] & ((d < head_dim) | EVEN_D)[None, :]  # EVEN_D: constant along d
    q = tl.load(q_ptr + b * stride_qb + (h * group + g)[:, None] * stride_qh + d[None, :], mask=gd_mask, other=0.0)
    t = tl.arange(0, BLOCK_N)
    slot = t % PAGE_SIZE
    k_base = k_cache_ptr + h * stride_kh + slot[:, None] * stride_ks + d[None, :]
    v_base = v_cache_ptr + h * stride_vh + slot[:, None] * stride_vs + d[None, :]
    row = pages_ptr + b * stride_pb + h * stride_ph
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    # The next block's page ids are loaded one step ahead, into registers: the K/V addresses of a
    # step then depend on no load of that step, so the pipeliner can keep several K/V tiles in flight.
    entry = start + t // PAGE_SIZE
    next_pages = tl.load(row + entry, mask=entry < end, other=-1).to(tl.int32)
    for e0 in range(start, end, PAGES_PER_BLOCK):
        phys = next_pages
        entry = e0 + PAGES_PER_BLOCK + t // PAGE_SIZE
        next_pages = tl.load(row + entry, mask=entry < end, other=-1).to(tl.int32)
        tok_ok = (phys >= 0) & ((phys != last_page) | (slot < last_fill))
        kv_mask = tok_ok[:, None] & ((d < head_dim) | EVEN_D)[None, :]
        offset = tl.where(tok_ok, phys, 0).to(tl.int64)
        k = tl.load(k_base + offset[:, None] * stride_kp, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offset[:, None] * stride_vp, mask=kv_mask, other=0.0)
        m_i, l_i, acc = _online_softmax_step(q, k, v, tok_ok, m_i, l_i, acc, sm_scale_log2, DOT_PRECISION)

    l_safe = tl.where(l_i > 0, l_i, 1.0)
    lse = tl.where(l_i > 0, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    rows = b * stride_ob + (h * group + g) * stride_oh + split * stride_os
    o = acc / l_safe[:, None]
    tl.store(o_ptr + rows[:, None] + d[None, :], o.to(o_ptr.dtype.element_ty), mask=gd_mask)
    tl.store(lse_ptr + b * stride_lb + (h * group + g) * stride_lh + split * stride_ls, lse, mask=g < group)


# ---------------------------------------------------------------------------------------------- launchers
@dataclass(frozen=True)
class DecodeLaunch:
    """How the decode kernel walks a page list; :func:`default_decode_launch` gives the one it uses.

    pages_per_block: pages per loop step (K and V tiles of ``pages_per_block * page_size`` tokens; at
        least 16 tokens, a power of two).
    num_stages: software-pipeline depth (``num_stages - 1`` K/V tiles in flight), 1 to 6.
    num_warps: warps per program: 1, 2, 4, 8 or 16.

    ``scripts/sweep_kernels.py`` times others on a GPU, which is how the default is to be chosen.
    """

    pages_per_block: int
    num_stages: int
    num_warps: int = 4

    def __post_init__(self):
        ppb = self.pages_per_block
        if not isinstance(ppb, int) or ppb < 1 or ppb & (ppb - 1):
            raise ValueError(f"pages_per_block={ppb!r} must be a power of two >= 1")
        if self.num_stages not in range(1, 7):
            raise ValueError(f"num_stages={self.num_stages!r} must be 1 to 6")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps={self.num_warps!r} must be one of 1, 2, 4, 8, 16")


def default_decode_launch(page_size: int, head_dim: int, elem_bytes: int) -> DecodeLaunch:
    """About 16 KiB of K per loop step, three steps in flight for 16-bit caches (two K/V tiles of 16 KiB
    per stage keep two programs per SM within shared memory), 4 warps."""
    tokens = max(16, 16384 // (next_pow2(head_dim) * elem_bytes))
    tokens = min(tokens, 128) if elem_bytes <= 2 else tokens  # 16-bit d 16: 512 tokens spilled 1184 B (sm_90)
    num_stages = 3 if elem_bytes <= 2 and head_dim <= 128 else 2
    return DecodeLaunch(pages_per_block=max(1, tokens // page_size), num_stages=num_stages)


def _launch(q, k_cache, v_cache, page_table, seq_lens, pages, *, sm_scale, num_splits, out, lse, list_lens=None,
            config=None):
    require_triton("decode attention")
    batch, q_heads, head_dim = q.shape
    _, kv_heads, page_size, _ = k_cache.shape
    if page_size & (page_size - 1):
        raise ValueError(f"page_size={page_size} (k_cache.shape[2]) must be a power of two")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError(
            f"k_cache and v_cache need a unit stride in head_dim, got strides {k_cache.stride()}, {v_cache.stride()}"
        )
    q, page_table, seq_lens = unit_stride(q), unit_stride(page_table), unit_stride(seq_lens)
    sparse = pages is not None
    # Dense attention walks the page table row: the same physical page list, shared by the KV heads.
    pages = unit_stride(pages) if sparse else page_table
    num_entries = pages.shape[-1]
    if config is None:
        config = default_decode_launch(page_size, head_dim, k_cache.element_size())
    if not isinstance(config, DecodeLaunch):
        raise TypeError(f"config={config!r} must be a DecodeLaunch or None (the default)")
    ppb = config.pages_per_block
    if ppb * page_size < 16:
        raise ValueError(f"{config}: pages_per_block * page_size = {ppb * page_size} tokens per block; "
                         f"tl.dot needs at least 16 (pages_per_block >= {16 // page_size} at page_size {page_size})")
    num_blocks = triton.cdiv(num_entries, ppb)
    if num_splits is None:
        num_splits = choose_num_splits(batch, kv_heads, num_blocks, q.device)
    if not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"num_splits={num_splits!r} must be a positive int or None (automatic)")
    num_splits = grid_splits(num_splits, num_blocks)
    out, lse, o_t, lse_t = split_outputs(q, num_splits, out, lse)
    if batch == 0 or q_heads == 0:
        return out, lse
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(head_dim)
    launch(
        _paged_decode_kernel, (batch * kv_heads, num_splits),
        q_ptr=q, k_cache_ptr=k_cache, v_cache_ptr=v_cache, page_table_ptr=page_table, seq_lens_ptr=seq_lens,
        pages_ptr=pages, list_lens_ptr=seq_lens if list_lens is None else unit_stride(list_lens), o_ptr=o_t,
        lse_ptr=lse_t,
        sm_scale_log2=scale * 1.4426950408889634, kv_heads=kv_heads, group=q_heads // kv_heads,
        head_dim=head_dim, num_entries=num_entries,
        stride_qb=q.stride(0), stride_qh=q.stride(1),
        stride_kp=k_cache.stride(0), stride_kh=k_cache.stride(1), stride_ks=k_cache.stride(2),
        stride_vp=v_cache.stride(0), stride_vh=v_cache.stride(1), stride_vs=v_cache.stride(2),
        stride_ptb=page_table.stride(0), stride_pb=pages.stride(0), stride_ph=pages.stride(1) if sparse else 0,
        stride_ob=o_t.stride(0), stride_oh=o_t.stride(1), stride_os=o_t.stride(2),
        stride_lb=lse_t.stride(0), stride_lh=lse_t.stride(1), stride_ls=lse_t.stride(2),
        SPARSE=sparse, HAS_LIST_LENS=list_lens is not None, PAGE_SIZE=page_size, PAGES_PER_BLOCK=ppb,
        MIN_BLOCKS_PER_SPLIT=MIN_BLOCKS_PER_SPLIT,
        BLOCK_N=ppb * page_size,
        # tl.dot needs at least 16 rows and columns: pad the group and head_dim with masked lanes.
        BLOCK_G=max(16, next_pow2(q_heads // kv_heads)), BLOCK_D=max(16, next_pow2(head_dim)),
        EVEN_D=head_dim == max(16, next_pow2(head_dim)),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if num_splits > 1:
        finish_splits(out, lse, o_t, lse_t)
    return out, lse


def sparse_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    pages: torch.Tensor,
    *,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
    list_lens: torch.Tensor | None = None,
    config: DecodeLaunch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over per-(request, KV head) lists of physical pages (Triton, fp32 accumulation).

    Same semantics as :func:`sparse_decode_attention_ref`; layouts in the module docstring.

    Parameters
    ----------
    q : Tensor ``[batch, q_heads, head_dim]`` (fp16, bf16 or fp32, the cache's dtype).
    k_cache, v_cache : Tensor ``[num_pages, kv_heads, page_size, head_dim]``.
    page_table : Tensor ``[batch, max_pages]`` int32/int64 physical page ids.
    seq_lens : Tensor ``[batch]`` int32/int64 cached tokens per request.
    pages : Tensor ``[batch, kv_heads, budget]`` int32/int64 physical page ids, ``-1`` skipped anywhere.
    sm_scale : score scale, default ``1 / sqrt(head_dim)``.
    num_splits : programs per (request, KV head) in the grid, at most ``split_kv.MAX_SPLITS``; ``None``
        picks from shapes and the SM count. Each request uses as many of them as its length fills.
    out, lse : optional contiguous outputs ``[batch, q_heads, head_dim]`` (``q.dtype``) and
        ``[batch, q_heads]`` float32.
    list_lens : optional ``[batch]`` int32/int64, leading entries of each page list that may hold a
        page (module docstring); the rest is not read.
    config : optional :class:`DecodeLaunch` (tile, pipeline depth, warps); ``None``:
        :func:`default_decode_launch`. Results agree across configs to rounding.

    Returns
    -------
    ``(o, lse)``: ``o`` ``[batch, q_heads, head_dim]``, ``lse`` ``[batch, q_heads]`` float32 natural log.
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens, pages, list_lens)
    return _launch(q, k_cache, v_cache, page_table, seq_lens, pages,
                   sm_scale=sm_scale, num_splits=num_splits, out=out, lse=lse, list_lens=list_lens, config=config)


def dense_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
    config: DecodeLaunch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over every cached token of each request (Triton).

    Same semantics as :func:`dense_decode_attention_ref`; arguments as in
    :func:`sparse_decode_attention` without ``pages`` (the split count sees ``page_table.shape[1]``
    pages, so a decode step's launch does not depend on the lengths).
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens)
    return _launch(q, k_cache, v_cache, page_table, seq_lens, None,
                   sm_scale=sm_scale, num_splits=num_splits, out=out, lse=lse, config=config)

"""Decode attention over a paged KV cache on CPU: the product path where Triton does not run.

Same layouts, signatures and ``(o, lse)`` outputs as the references in
:mod:`vortex_rl.kernels.paged_decode`, with fewer and larger ops per layer:

1. the attended pages of a chunk of requests are copied, in the cache's dtype, with one
   ``index_select`` per K and V into a reusable buffer laid out ``[requests, kv_heads, tokens, head_dim]``
   (a page of one KV head is ``page_size * head_dim`` contiguous elements, so each copy is a memcpy);
2. one fused CPU attention call (ATen's flash kernel, fp32 accumulation, natural-log ``lse``) treats
   the ``group`` query heads of a KV head as ``group`` query rows, so GQA needs no repeated keys;
   tokens past a request's length and unlisted pages are masked additively.

What depends on the step only (dense: the chunks, their pages and masks; sparse: each request's last
page and its fill) is derived in the step's first layer and kept in the step's scratch
(:mod:`.cpu_step`): 52 torch ops a sparse layer at SmolLM2's shape, 88 before.

Requests are taken in chunks of about ``CHUNK_BYTES`` of gathered K and V: a chunk's copy is still in
cache when the attention reads it (on a 2-core Xeon, 16 requests x 8K tokens: 19 ms per layer in
chunks of 2 requests, 33 ms in one piece). On CPU the page table and lengths are read on the host for
free, so each chunk is trimmed to its longest request (dense) instead of the table's width.
"""

from __future__ import annotations

import math

import torch

from vortex_rl.kernels.cpu_step import once_per_step
from vortex_rl.kernels.page_lists import check_decode_inputs, last_page_fill

# Gathered K + V per chunk; measured best between 16 and 32 MiB on a 2-core Xeon (L2 4 MiB).
CHUNK_BYTES = 32 << 20

_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class _Workspace:
    """Growable scratch buffers for the gathered pages, one per (role, dtype).

    A fresh multi-megabyte tensor comes from ``mmap`` and is page-faulted in on every call; reusing one
    buffer per layer keeps those faults out of the decode step. Buffers are made outside inference mode
    so that steps inside and outside it can both write them.
    """

    def __init__(self):
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def take(self, role: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get((role, dtype))
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):
                buf = torch.empty(numel, dtype=dtype)
            self._buffers[(role, dtype)] = buf
        return buf[:numel]


_WORKSPACE = _Workspace()


def _gather_pages(cache: torch.Tensor, physical: torch.Tensor, rows: torch.Tensor, role: str) -> torch.Tensor:
    """Copy of the pages ``physical [n, kv_heads, width]`` (int64) of each KV head, in a reused buffer:
    ``[n, kv_heads, width * page_size, head_dim]``. ``rows``: the same pages as rows of the
    ``[num_pages * kv_heads, page_size, head_dim]`` view of a contiguous cache."""
    n, kv_heads, width = physical.shape
    page_size, head_dim = cache.shape[2], cache.shape[3]
    out = _WORKSPACE.take(role, physical.numel() * page_size * head_dim, cache.dtype)
    if cache.is_contiguous():
        torch.index_select(cache.view(-1, page_size, head_dim), 0, rows, out=out.view(-1, page_size, head_dim))
    else:  # any strides (e.g. a cache shared with another engine): advanced indexing, one more copy
        heads = torch.arange(kv_heads)[None, :, None]
        out.view(n, kv_heads, width, page_size, head_dim).copy_(cache[physical, heads])
    return out.view(n, kv_heads, width * page_size, head_dim)


def _rows(physical: torch.Tensor) -> torch.Tensor:
    """``[n * kv_heads * width]`` rows of a contiguous cache's ``[num_pages * kv_heads, page_size,
    head_dim]`` view for ``physical [n, kv_heads, width]``: row r is page r // kv_heads of KV head r % kv_heads."""
    kv_heads = physical.shape[1]
    return (physical * kv_heads + torch.arange(kv_heads).view(1, kv_heads, 1)).reshape(-1)


def _masks(valid: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(bias [n, 1 or kv, 1, tokens] or None, empty [n, 1 or kv, 1] or None)`` for ``valid [n, 1 or kv,
    tokens]``: the additive mask, and the rows with nothing to attend (``None`` when there are none)."""
    if valid is None:
        return None, None
    bias = torch.where(valid, 0.0, float("-inf")).to(dtype).unsqueeze(2)
    empty = ~valid.any(dim=-1, keepdim=True)
    return bias, empty if bool(empty.any()) else None


def _attend_chunk(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, physical: torch.Tensor, rows: torch.Tensor,
    bias: torch.Tensor | None, empty: torch.Tensor | None, scale: float, *, use_flash: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one chunk of requests over gathered pages.

    q: ``[n, kv_heads, group, head_dim]``; physical: ``[n, kv_heads, width]`` int64 physical pages
    (any valid id where the page is masked) and ``rows`` (:func:`_rows`); bias, empty: :func:`_masks`.
    Returns ``o [n, kv_heads, group, head_dim]`` (``q.dtype``) and ``lse [n, kv_heads, group]`` float32.
    """
    keys, values = _gather_pages(k_cache, physical, rows, "k"), _gather_pages(v_cache, physical, rows, "v")
    if use_flash:
        o, lse = _flash_cpu(q, keys, values, attn_mask=bias, scale=scale)
        lse = lse.float()
    else:
        scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale
        if bias is not None:
            scores += bias.float()
        lse = torch.logsumexp(scores, dim=-1)
        safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
        o = torch.matmul(torch.exp(scores - safe[..., None]), values.float()).to(q.dtype)
    if empty is not None:
        # The flash kernel returns lse 0 for a row with nothing attended; the contract is -inf and o 0.
        lse = lse.masked_fill(empty, float("-inf"))
        o = o.masked_fill(empty[..., None], 0.0)
    return o, lse


def _chunk_size(kv_heads: int, width: int, page_size: int, head_dim: int, element_size: int) -> int:
    """Requests per chunk: about ``CHUNK_BYTES`` of gathered K and V."""
    return max(1, CHUNK_BYTES // (2 * kv_heads * width * page_size * head_dim * element_size))


def _dense_plan(page_table: torch.Tensor, seq_lens: torch.Tensor, kv_heads: int, page_size: int, head_dim: int,
                dtype: torch.dtype, element_size: int) -> list[tuple]:
    """Chunks of requests ``(b0, b1, physical, rows, bias, empty)`` over every page of each request, up
    to the chunk's longest (what dense decode derives from the step alone)."""
    lens, table = seq_lens.long(), page_table.long()
    batch = lens.shape[0]
    width = int(((lens.max() + page_size - 1) // page_size).clamp(max=table.shape[1], min=1))
    step = _chunk_size(kv_heads, width, page_size, head_dim, element_size)
    chunks = []
    for b0 in range(0, batch, step):
        b1 = min(b0 + step, batch)
        chunk_lens = lens[b0:b1]
        num_pages = ((chunk_lens + page_size - 1) // page_size).clamp(max=table.shape[1])
        chunk_width = max(int(num_pages.max()), 1)
        valid = (torch.arange(chunk_width * page_size)[None, :] < chunk_lens[:, None])[:, None, :]
        physical = table[b0:b1, None, :chunk_width].clamp(min=0).expand(-1, kv_heads, -1)
        bias, empty = _masks(None if bool(valid.all()) else valid, dtype)
        chunks.append((b0, b1, physical, _rows(physical), bias, empty))
    return chunks


def _sparse_plan(page_table: torch.Tensor, seq_lens: torch.Tensor, list_lens: torch.Tensor | None,
                 budget: int, page_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(last_page, last_fill, open_columns)``, each ``[batch, 1, 1 or budget]``: each request's last
    physical page, the tokens it holds, and the list columns that may hold a page (before ``list_lens``,
    none for a request with no tokens)."""
    batch = page_table.shape[0]
    last_page, last_fill = last_page_fill(page_table, seq_lens, page_size)
    open_columns = (seq_lens > 0).view(batch, 1, 1)
    if list_lens is not None:
        open_columns = open_columns & (torch.arange(budget) < list_lens.long().view(batch, 1, 1))
    return last_page.view(batch, 1, 1), last_fill.view(batch, 1, 1), open_columns


def _decode_cpu(q, k_cache, v_cache, page_table, seq_lens, page_ids, *, sm_scale, out, lse, use_flash,
                list_lens=None, scratch=None):
    batch, q_heads, head_dim = q.shape
    kv_heads, page_size = k_cache.shape[1], k_cache.shape[2]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(head_dim)
    use_flash = use_flash and _flash_cpu is not None
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty(batch, q_heads, dtype=torch.float32) if lse is None else lse
    if batch == 0 or q_heads == 0:
        return out, lse
    qg = q.view(batch, kv_heads, q_heads // kv_heads, head_dim)
    if page_ids is None:
        chunks = once_per_step(scratch, ("dense_decode", kv_heads, page_size, head_dim, q.dtype),
                               (page_table, seq_lens),
                               lambda: _dense_plan(page_table, seq_lens, kv_heads, page_size, head_dim, q.dtype,
                                                   k_cache.element_size()))
    else:
        budget = page_ids.shape[-1]
        last_page, last_fill, open_columns = once_per_step(
            scratch, ("sparse_decode", page_size, budget), (page_table, seq_lens, list_lens),
            lambda: _sparse_plan(page_table, seq_lens, list_lens, budget, page_size))
        pages = page_ids.long()
        # Valid tokens of each listed page: all of them, but the request's last page holds last_fill.
        fill = torch.where((pages >= 0) & open_columns, torch.where(pages == last_page, last_fill, page_size), 0)
        # Attend over the listed columns only: a list sized for a larger budget (the budget guard's
        # engines) ends in -1 columns, and masked keys still change the kernel's summation blocks, so
        # without the trim the same pages would round differently from an engine sized for this budget.
        width = max(int(((fill > 0) * torch.arange(1, budget + 1)).amax()), 1)
        pages, fill = pages[..., :width].clamp(min=0), fill[..., :width]
        step = _chunk_size(kv_heads, width, page_size, head_dim, k_cache.element_size())
        chunks = []
        for b0 in range(0, batch, step):
            b1 = min(b0 + step, batch)
            valid = (torch.arange(page_size) < fill[b0:b1, :, :, None]).view(b1 - b0, kv_heads, width * page_size)
            chunks.append((b0, b1, pages[b0:b1], _rows(pages[b0:b1]), *_masks(valid, q.dtype)))
    for b0, b1, physical, rows, bias, empty in chunks:
        o, chunk_lse = _attend_chunk(qg[b0:b1], k_cache, v_cache, physical, rows, bias, empty, scale,
                                     use_flash=use_flash)
        out[b0:b1] = o.reshape(b1 - b0, q_heads, head_dim)
        lse[b0:b1] = chunk_lse.reshape(b1 - b0, q_heads)
    return out, lse


def _check_cpu(q: torch.Tensor, out, lse) -> None:
    if q.device.type != "cpu":
        raise ValueError(f"the CPU decode kernels take CPU tensors, got q on {q.device}")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype):
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}, got {tuple(out.shape)} {out.dtype}")
    if lse is not None and (lse.shape != q.shape[:2] or lse.dtype != torch.float32):
        raise ValueError(f"lse must be {tuple(q.shape[:2])} float32, got {tuple(lse.shape)} {lse.dtype}")


def sparse_decode_attention_cpu(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    page_ids: torch.Tensor,
    *,
    sm_scale: float | None = None,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
    use_flash: bool = True,
    list_lens: torch.Tensor | None = None,
    scratch: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over per-(request, KV head) lists of physical pages, on CPU.

    Same semantics as :func:`~vortex_rl.kernels.paged_decode.sparse_decode_attention_ref`; layouts in
    the :mod:`~vortex_rl.kernels.paged_decode` docstring.

    Parameters
    ----------
    q : Tensor ``[batch, q_heads, head_dim]`` (fp32, bf16 or fp16, the cache's dtype).
    k_cache, v_cache : Tensor ``[num_pages, kv_heads, page_size, head_dim]`` (contiguous is fastest).
    page_table : Tensor ``[batch, max_pages]`` int32/int64 physical page ids.
    seq_lens : Tensor ``[batch]`` int32/int64 cached tokens per request.
    page_ids : Tensor ``[batch, kv_heads, budget]`` int32/int64 physical pages (``page_table`` entries),
        ``-1`` skipped anywhere.
    sm_scale : score scale, default ``1 / sqrt(head_dim)``.
    out, lse : optional outputs ``[batch, q_heads, head_dim]`` (``q.dtype``) and ``[batch, q_heads]`` float32.
    use_flash : ATen's fused CPU attention (fp32 accumulation); ``False`` takes two matmuls in fp32 over
        the same gathered pages (also the path when that kernel is missing from the torch build).
    list_lens : optional ``[batch]`` leading entries of each page list that may hold a page; the rest
        is not read (:mod:`~vortex_rl.kernels.paged_decode`).
    scratch : the decode step's dict (:mod:`~vortex_rl.kernels.cpu_step`): what depends on the page
        table, lengths and ``list_lens`` only is derived in the step's first layer and kept there.

    Returns
    -------
    ``(o, lse)``: ``o`` ``[batch, q_heads, head_dim]``, ``lse`` ``[batch, q_heads]`` float32 natural log
    (``-inf`` and ``o = 0`` where nothing is attended).
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens, page_ids, list_lens)
    _check_cpu(q, out, lse)
    return _decode_cpu(q, k_cache, v_cache, page_table, seq_lens, page_ids, sm_scale=sm_scale, out=out, lse=lse,
                       use_flash=use_flash, list_lens=list_lens, scratch=scratch)


def dense_decode_attention_cpu(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    sm_scale: float | None = None,
    out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
    use_flash: bool = True,
    scratch: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over every cached token of each request, on CPU.

    Same semantics as :func:`~vortex_rl.kernels.paged_decode.dense_decode_attention_ref`; arguments as
    in :func:`sparse_decode_attention_cpu` without ``page_ids`` and ``list_lens``. Each chunk of requests
    gathers only up to its longest request's last page.
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens)
    _check_cpu(q, out, lse)
    return _decode_cpu(q, k_cache, v_cache, page_table, seq_lens, None,
                       sm_scale=sm_scale, out=out, lse=lse, use_flash=use_flash, scratch=scratch)

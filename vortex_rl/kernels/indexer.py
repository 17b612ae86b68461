"""Fused page selection of the ``block_sparse_attention`` flow: centroid scores, top-k, sink and local pages.

One program per (request, KV head) scores every page of the request by the mean over its GQA group
of ``q . centroid`` (equal to the group-averaged query's score), and writes the *physical* ids of the
chosen pages in ascending logical order (the ``pages`` argument of sparse decode attention).

Top-k without sorting: a score's fp32 bits map to an integer key with the same order (negative floats
have their magnitude bits flipped), and a 32-step bitwise search finds the largest threshold ``T`` with
``count(key >= T) >= k``, the k-th largest key. Pages above ``T`` are taken, and pages equal to ``T``
by ascending page id until ``k`` are chosen; a prefix sum of the chosen mask gives each page its output
slot. Only reductions and scans are used, so the kernel behaves the same compiled and in the
interpreter, and nothing depends on data on the host (CUDA-graph safe).

The scores pass streams the centroids in blocks of pages and parks the scores in a scratch row, which
the selection reloads as one block. When the (request, KV head) rows fill the GPU, one program does
both (a CTA barrier orders them); at small batch (the long tail of every rollout, where one program
per row would leave most SMs idle and stream a 16K-token context's centroids alone) the scores pass
runs as its own launch over chunks of each row's pages, and a light second launch selects.
"""

import torch

from vortex_rl.kernels._triton import (
    check_int_tensor,
    check_same_device,
    launch,
    next_pow2,
    require_triton,
    tl,
    triton,
    unit_stride,
)
from vortex_rl.kernels.split_kv import sm_count, split_count_for

# The selection holds one row of scores in registers: 16384 pages (256K tokens of 16) at most.
MAX_PAGES = 16384
# Most scoring programs per (request, KV head): at batch 1 with 8 KV heads, 16 chunks already give
# 128 programs, about one per SM.
MAX_CHUNKS = 16


def choose_num_chunks(rows: int, num_blocks: int, device: torch.device) -> int:
    """Scoring programs per row for ``rows`` (request, KV head) rows of ``num_blocks`` page blocks; 1 off CUDA.

    The split-KV rule (:func:`~vortex_rl.kernels.split_kv.split_count_for`) with one block of pages
    per chunk at least.
    """
    if device.type != "cuda":
        return 1
    return split_count_for(rows, num_blocks, sm_count(device), min_blocks=1, max_splits=MAX_CHUNKS)


@triton.jit
def _num_pages(page_table_ptr, seq_lens_ptr, b, stride_ptb, max_pages, PAGE_SIZE: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Pages of request ``b``: from its length, or (``PAGE_SIZE == 0``) its non-negative table entries."""
    if PAGE_SIZE > 0:
        seq_len = tl.load(seq_lens_ptr + b).to(tl.int32)
        n = tl.minimum((seq_len + PAGE_SIZE - 1) // PAGE_SIZE, max_pages)
    else:
        idx = tl.arange(0, BLOCK_N)
        entry = tl.load(page_table_ptr + b * stride_ptb + idx, mask=idx < max_pages, other=-1)
        n = tl.sum((entry >= 0).to(tl.int32), axis=0)
    return n


@triton.jit
def _top_k(score, is_candidate, k):
    """Mask of the ``k`` best candidates: scores above the k-th largest, then ties by ascending index."""
    bits = score.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64) + 2147483648  # float order
    key = tl.where(is_candidate, ordered, -1)
    # Largest threshold in [0, 2**32) with count(key >= threshold) >= k, one bit at a time.
    thr = tl.zeros([], tl.int64)
    for i in range(32):
        trial = thr | (tl.full([], 1, tl.int64) << (31 - i))
        count = tl.sum((key >= trial).to(tl.int32), axis=0)
        thr = tl.where(count >= k, trial, thr)
    above = key > thr
    tie = (key == thr).to(tl.int32)
    need = k - tl.sum(above.to(tl.int32), axis=0)
    return above | ((tie > 0) & (tl.cumsum(tie, axis=0) <= need))


@triton.jit
def _score_pages(q_ptr, centroids_ptr, table_row, scores_row, b, h, group, head_dim, start, end,
                 stride_qb, stride_qh, stride_cp, stride_ch,
                 BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """Store the scores of logical pages ``[start, end)`` of one (request, KV head) into ``scores_row``."""
    g = tl.arange(0, BLOCK_G)[:, None]
    d = tl.arange(0, BLOCK_D)
    d_ok = (d < head_dim) | EVEN_D  # EVEN_D: a constant mask along d keeps the loads vectorised
    q = tl.load(q_ptr + b * stride_qb + (h * group + g) * stride_qh + d[None, :],
                mask=(g < group) & d_ok[None, :], other=0.0)
    # Scoring each query head with tl.dot and averaging after equals scoring the mean query, and a
    # dot lets the compiler pipeline the centroid loads. The next block's physical ids are loaded one
    # step ahead, into registers, so the centroid loads of a step wait on no page-table load of that
    # step and the pipeliner can overlap them.
    p = start + tl.arange(0, BLOCK_P)
    next_phys = tl.load(table_row + p, mask=p < end, other=0).to(tl.int64)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < end
        phys = next_phys
        next_phys = tl.load(table_row + p + BLOCK_P, mask=p + BLOCK_P < end, other=0).to(tl.int64)
        c = tl.load(centroids_ptr + phys[:, None] * stride_cp + h * stride_ch + d[None, :],
                    mask=p_ok[:, None] & d_ok[None, :], other=0.0)
        per_head = tl.dot(c, tl.trans(q), input_precision=DOT_PRECISION)  # [BLOCK_P, BLOCK_G]
        tl.store(scores_row + p, tl.sum(per_head, axis=1) / group, mask=p_ok)


@triton.jit
def _block_sparse_indexer_kernel(
    q_ptr, centroids_ptr, page_table_ptr, seq_lens_ptr, budgets_ptr, out_ptr, scores_ptr,
    kv_heads, group, head_dim, max_pages, max_budget, sink_pages, local_pages,
    stride_qb, stride_qh, stride_cp, stride_ch, stride_ptb, stride_ob, stride_oh,
    PHASE: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``PHASE`` 0: score and select in one program per (request, KV head); 1: score one chunk of
    pages per program (grid axis 1: chunks); 2: select from the scores phase 1 stored."""
    row = tl.program_id(0)
    b = row // kv_heads
    h = row % kv_heads
    n = _num_pages(page_table_ptr, seq_lens_ptr, b, stride_ptb, max_pages, PAGE_SIZE, BLOCK_N)
    budget = tl.minimum(tl.load(budgets_ptr + b).to(tl.int32), max_budget)
    fits = n <= budget
    scores_row = scores_ptr + row.to(tl.int64) * BLOCK_N
    table_row = page_table_ptr + b * stride_ptb
    # Scores only when the pages overflow the budget; otherwise every page is taken.
    n_scored = tl.where(fits, 0, n)
    if PHASE == 0:
        _score_pages(q_ptr, centroids_ptr, table_row, scores_row, b, h, group, head_dim, 0, n_scored,
                     stride_qb, stride_qh, stride_cp, stride_ch, BLOCK_P, BLOCK_G, BLOCK_D, EVEN_D, DOT_PRECISION)
        tl.debug_barrier()  # the scores were stored by other threads of this program
    if PHASE == 1:
        # The grid's chunk count is fixed by shapes (CUDA graphs); each request cuts its own pages
        # into whole blocks over the chunks it has work for, the other chunks return at once.
        blocks = tl.cdiv(n_scored, BLOCK_P)
        per_chunk = tl.cdiv(blocks, tl.num_programs(1)) * BLOCK_P
        start = tl.program_id(1) * per_chunk
        end = tl.minimum(start + per_chunk, n_scored)
        _score_pages(q_ptr, centroids_ptr, table_row, scores_row, b, h, group, head_dim, start, end,
                     stride_qb, stride_qh, stride_cp, stride_ch, BLOCK_P, BLOCK_G, BLOCK_D, EVEN_D, DOT_PRECISION)
    if PHASE != 1:
        idx = tl.arange(0, BLOCK_N)
        k = budget - sink_pages - local_pages
        # A 0-d condition joins a block mask through tl.where: `&` with it breaks in the interpreter.
        is_candidate = tl.where(fits, False, (idx >= sink_pages) & (idx < n - local_pages))
        top = _top_k(tl.load(scores_row + idx, mask=is_candidate, other=0.0), is_candidate, k)
        fixed = ((idx < sink_pages) | (idx >= n - local_pages)) & (idx < n)
        chosen = tl.where(fits, idx < n, fixed | top)

        chosen_i = chosen.to(tl.int32)
        slot = tl.cumsum(chosen_i, axis=0) - 1  # ascending page ids, valid entries first
        out_row = out_ptr + b * stride_ob + h * stride_oh
        # Physical ids, so the attention kernel reads no page table in its loop.
        phys_out = tl.load(table_row + idx, mask=chosen, other=-1)
        tl.store(out_row + slot, phys_out.to(tl.int32), mask=chosen & (slot < max_budget))
        j = tl.arange(0, BLOCK_B)
        tl.store(out_row + j, tl.full([BLOCK_B], -1, tl.int32),
                 mask=(j >= tl.sum(chosen_i, axis=0)) & (j < max_budget))


def _check_indexer_inputs(q, centroids, page_table, seq_lens, budgets, sink_pages, local_pages, max_budget,
                          page_size) -> None:
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, q_heads, head_dim], got {tuple(q.shape)}")
    batch, q_heads, head_dim = q.shape
    if centroids.dim() != 4 or centroids.shape[2] != 1 or centroids.shape[3] != head_dim:
        raise ValueError(
            f"centroids must be [num_pages, kv_heads, 1, head_dim={head_dim}], got {tuple(centroids.shape)}"
        )
    if q.dtype != centroids.dtype or centroids.stride(-1) != 1:
        raise ValueError(
            f"q and centroids must share a dtype and centroids need a unit last stride, got {q.dtype} and "
            f"{centroids.dtype} (stride {centroids.stride(-1)})"
        )
    if q_heads % centroids.shape[1]:
        raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({centroids.shape[1]})")
    check_int_tensor("page_table", page_table, (batch, None))
    check_int_tensor("seq_lens", seq_lens, (batch,))
    check_int_tensor("budgets", budgets, (batch,))
    if sink_pages < 0 or local_pages < 0 or max_budget < sink_pages + local_pages:
        raise ValueError(
            f"need sink_pages >= 0, local_pages >= 0 and max_budget >= sink_pages + local_pages; got "
            f"sink_pages={sink_pages}, local_pages={local_pages}, max_budget={max_budget}"
        )
    if page_size is not None and (page_size < 1 or page_size & (page_size - 1)):
        raise ValueError(f"page_size={page_size} must be a positive power of two or None")
    check_same_device(q=q, centroids=centroids, page_table=page_table, seq_lens=seq_lens, budgets=budgets)


def _output(out: torch.Tensor | None, shape: tuple, device) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=torch.int32, device=device)
    if tuple(out.shape) != shape or out.dtype != torch.int32 or out.stride(-1) != 1:
        raise ValueError(f"out must be int32 {shape} with a unit last stride, got {out.dtype} {tuple(out.shape)}")
    return out


def block_sparse_indexer(
    q: torch.Tensor,
    centroids: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    budgets: torch.Tensor,
    *,
    sink_pages: int,
    local_pages: int,
    max_budget: int,
    page_size: int | None = None,
    out: torch.Tensor | None = None,
    num_chunks: int | None = None,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Physical pages each (request, KV head) attends to under ``block_sparse_attention``.

    One launch when the (request, KV head) programs fill the GPU; otherwise two: a scores pass split
    over chunks of pages (``num_chunks`` programs per row), then a light selection pass per row.

    Parameters
    ----------
    q : Tensor ``[batch, q_heads, head_dim]``; the query heads of a GQA group are averaged (fp32).
    centroids : Tensor ``[num_pages, kv_heads, 1, head_dim]`` mean key of every physical page.
    page_table : Tensor ``[batch, max_pages]`` int32/int64 physical page ids, ``-1`` padding.
    seq_lens : Tensor ``[batch]`` int32/int64 cached tokens (read only when ``page_size`` is given).
    budgets : Tensor ``[batch]`` int32/int64 pages per request (capped at ``max_budget``).
    sink_pages, local_pages : the first / last pages always kept.
    max_budget : width of the output.
    page_size : tokens per page; ``None`` counts a request's pages as its non-negative table entries.
    out : optional int32 output ``[batch, kv_heads, max_budget]`` with a unit last stride.
    num_chunks : programs that score one row's pages; ``None`` picks from the SM count and the page
        table's width (never from lengths, so a CUDA graph replays the same grid), 1 off CUDA.
    scores : optional float32 workspace ``[batch * kv_heads, next_pow2(max_pages)]`` (unit last stride);
        after the call, row ``b * kv_heads + h`` holds the scores of the request's pages when it
        overflows its budget (others are left untouched).

    Returns
    -------
    Tensor ``[batch, kv_heads, max_budget]`` int32 physical page ids (``page_table`` entries) of: all
    ``n`` logical pages ``0..n-1`` when ``n <= budget``; else the sink pages, the ``budget - sink - local``
    best-scoring pages among ``[sink, n - local)``, and the local pages; in ascending logical order,
    ``-1`` padding after.
    """
    require_triton("block_sparse_indexer")
    _check_indexer_inputs(q, centroids, page_table, seq_lens, budgets, sink_pages, local_pages, max_budget, page_size)
    batch, q_heads, head_dim = q.shape
    kv_heads = centroids.shape[1]
    max_pages = page_table.shape[1]
    if max_pages > MAX_PAGES:
        raise ValueError(f"page_table has {max_pages} pages per request; block_sparse_indexer handles {MAX_PAGES}")
    out = _output(out, (batch, kv_heads, max_budget), q.device)
    q, page_table, seq_lens, budgets = (unit_stride(t) for t in (q, page_table, seq_lens, budgets))
    if batch == 0 or max_budget == 0:
        return out
    block_n = next_pow2(max_pages)
    block_d = max(16, next_pow2(head_dim))  # tl.dot needs 16 rows and columns at least
    block_p = max(16, 8192 // block_d)
    rows = batch * kv_heads
    if num_chunks is None:
        num_chunks = choose_num_chunks(rows, -(-max_pages // block_p), q.device)
    if not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks={num_chunks!r} must be a positive int or None (automatic)")
    num_chunks = min(num_chunks, MAX_CHUNKS, -(-max_pages // block_p))
    if scores is None:
        scores = torch.empty(rows, block_n, dtype=torch.float32, device=q.device)
    elif scores.shape != (rows, block_n) or scores.dtype != torch.float32 or not scores.is_contiguous():
        raise ValueError(f"scores must be a contiguous float32 workspace of shape {(rows, block_n)}, got "
                         f"{scores.dtype} {tuple(scores.shape)}")
    args = dict(
        q_ptr=q, centroids_ptr=centroids, page_table_ptr=page_table, seq_lens_ptr=seq_lens, budgets_ptr=budgets,
        out_ptr=out, scores_ptr=scores,
        kv_heads=kv_heads, group=q_heads // kv_heads, head_dim=head_dim, max_pages=max_pages,
        max_budget=max_budget, sink_pages=sink_pages, local_pages=local_pages,
        stride_qb=q.stride(0), stride_qh=q.stride(1), stride_cp=centroids.stride(0),
        stride_ch=centroids.stride(1), stride_ptb=page_table.stride(0), stride_ob=out.stride(0),
        stride_oh=out.stride(1),
        PAGE_SIZE=page_size or 0, BLOCK_P=block_p, BLOCK_N=block_n,
        BLOCK_B=next_pow2(max_budget), BLOCK_G=max(16, next_pow2(q_heads // kv_heads)), BLOCK_D=block_d,
        EVEN_D=head_dim == block_d, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    select_warps = 4 if block_n <= 1024 else (8 if block_n <= 4096 else 16)
    if num_chunks == 1:
        launch(_block_sparse_indexer_kernel, (rows,), **args, PHASE=0, num_warps=select_warps, num_stages=3)
    else:
        launch(_block_sparse_indexer_kernel, (rows, num_chunks), **args, PHASE=1, num_warps=4, num_stages=3)
        launch(_block_sparse_indexer_kernel, (rows,), **args, PHASE=2, num_warps=select_warps, num_stages=1)
    return out


def block_sparse_indexer_ref(
    q: torch.Tensor,
    centroids: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    budgets: torch.Tensor,
    *,
    sink_pages: int,
    local_pages: int,
    max_budget: int,
    page_size: int | None = None,
) -> torch.Tensor:
    """Plain-torch :func:`block_sparse_indexer` (fp32 scores, ``torch.topk``); same output layout."""
    _check_indexer_inputs(q, centroids, page_table, seq_lens, budgets, sink_pages, local_pages, max_budget, page_size)
    batch, q_heads, head_dim = q.shape
    kv_heads = centroids.shape[1]
    max_pages = page_table.shape[1]
    if page_size is None:
        n = (page_table >= 0).sum(dim=1)
    else:
        n = ((seq_lens.long() + page_size - 1) // page_size).clamp(max=max_pages)
    n = n.long()[:, None, None]
    budget = budgets.long().clamp(max=max_budget)[:, None, None]
    q_mean = q.float().reshape(batch, kv_heads, q_heads // kv_heads, head_dim).mean(dim=2)
    pages = centroids[page_table.long().clamp(min=0), :, 0].float()  # [batch, max_pages, kv_heads, head_dim]
    scores = torch.einsum("bhd,bphd->bhp", q_mean, pages)

    idx = torch.arange(max_pages, device=q.device)[None, None, :]
    is_candidate = (idx >= sink_pages) & (idx < n - local_pages)
    k = min(max(max_budget - sink_pages - local_pages, 0), max_pages)
    ranked = torch.where(is_candidate, scores, torch.full_like(scores, float("-inf"))).topk(k, dim=-1).indices
    rank_ok = torch.arange(k, device=q.device)[None, None, :] < budget - sink_pages - local_pages
    top = torch.zeros(scores.shape, dtype=torch.bool, device=q.device)
    top.scatter_(-1, ranked, rank_ok & torch.gather(is_candidate.expand_as(scores), -1, ranked))
    fixed = ((idx < sink_pages) | (idx >= n - local_pages)) & (idx < n)
    chosen = torch.where(n <= budget, idx < n, fixed | top)

    # Chosen ids in ascending order first: sort by (not chosen, page id).
    order = torch.where(chosen, idx, idx + max_pages).sort(dim=-1).values
    listed = order < max_pages
    phys = torch.gather(page_table.long(), 1, order.clamp(max=max_pages - 1).view(batch, -1)).view(order.shape)
    ids = torch.where(listed, phys, torch.full_like(phys, -1))
    if max_pages < max_budget:
        ids = torch.nn.functional.pad(ids, (0, max_budget - max_pages), value=-1)
    return ids[..., :max_budget].to(torch.int32).contiguous()

"""Page selection of the ``block_sparse_attention`` flow on CPU: the product path where Triton does not run.

Same signature and output as :func:`~vortex_rl.kernels.indexer.block_sparse_indexer_ref`, with the
per-layer work of a decode step in a handful of ops:

- the centroids of every page of every request are copied with one ``index_select`` of whole rows
  (``kv_heads * head_dim`` values per page), and scored with one ``bmm`` against a block-diagonal
  matrix of the group-averaged queries (``[batch, pages, kv_heads * head_dim] @ [batch, kv_heads *
  head_dim, kv_heads]``): no permuted copy of the centroids;
- one ``topk`` of budget width ranks every page, with the pages a request always keeps (sink, local,
  or all of them when they fit) at ``+inf``; each request takes its first ``count`` ranks and one sort
  of those ``budget`` ids puts them in ascending order;
- what depends on the step only (page counts, the pages each request always keeps, how many ranks it
  takes) is derived in the step's first layer and kept in the step's scratch (:mod:`.cpu_step`): 28
  torch ops a layer at SmolLM2's shape, where masks per kind of page, a scatter and a compaction in every
  layer took 92, which at batch 1 cost more than the scoring;
- on CPU the lengths are read on the host for free: the page row is trimmed to the longest request, and
  a step where every request fits its budget skips the scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.kernels.cpu_step import once_per_step
from vortex_rl.kernels.indexer import _check_indexer_inputs, _output


def _page_counts(page_table: torch.Tensor, seq_lens: torch.Tensor, page_size: int | None) -> torch.Tensor:
    """``[batch]`` int64 pages per request, from the lengths or (``page_size=None``) the table."""
    if page_size is None:
        return (page_table >= 0).sum(dim=1)
    return ((seq_lens.long() + page_size - 1) // page_size).clamp(max=page_table.shape[1])


def _centroid_scores(q: torch.Tensor, centroids: torch.Tensor, rows: torch.Tensor, width: int) -> torch.Tensor:
    """``mean(q over the group) . centroid`` for the pages ``rows [batch * width]`` (int64 physical ids,
    clamped): ``[batch, kv_heads, width]`` float32."""
    batch, q_heads, head_dim = q.shape
    kv_heads = centroids.shape[1]
    pages = torch.index_select(centroids.reshape(centroids.shape[0], kv_heads * head_dim), 0, rows)
    pages = pages.view(batch, width, kv_heads * head_dim).float()
    q_mean = q.float().view(batch, kv_heads, q_heads // kv_heads, head_dim).mean(dim=2)  # [b, kv, d]
    # Block diagonal: column h holds q_mean[:, h] in rows h * head_dim .. (h + 1) * head_dim. It is built
    # as its transpose and passed as a transposed view: MKL's batched product with a row-major 3-column
    # right operand ran 3x slower (SmolLM2 at 16 x 8K, 30 layers: 39 -> 14 ms a step).
    eye = torch.eye(kv_heads, dtype=torch.float32)
    block_t = (eye[None, :, :, None] * q_mean[:, None, :, :]).reshape(batch, kv_heads, kv_heads * head_dim)
    return torch.bmm(pages, block_t.transpose(1, 2)).transpose(1, 2)  # [b, kv, width]


@dataclass
class _Plan:
    """What the indexer derives from a step's page table, lengths and budgets (the same in every layer).

    width: pages of the longest request; table: ``[batch, width]`` int64 page-table entries;
    fits_all: ``[batch, kv_heads, width]`` the output when every request fits its budget (else ``None``);
    rows: ``[batch * width]`` the centroid rows to score; key_base: ``[batch, 1, width]`` float32 added to
    the scores, ``+inf`` for the pages a request always keeps (sink and local, or all of them when they
    fit its budget), 0 for candidates, ``-inf`` past its last page; take: ``[batch, 1, k]`` bool, the
    ranks each request takes (its fixed pages and the budget left after sink + local).
    """

    width: int
    table: torch.Tensor
    fits_all: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    key_base: torch.Tensor | None = None
    take: torch.Tensor | None = None


def _plan(page_table, seq_lens, budgets, *, sink_pages, local_pages, max_budget, page_size, kv_heads) -> _Plan:
    batch = page_table.shape[0]
    n = _page_counts(page_table, seq_lens, page_size).view(batch, 1, 1)
    budget = budgets.long().clamp(max=max_budget).view(batch, 1, 1)
    width = max(int(n.max()), 1)
    table = page_table[:, :width].long()
    idx = torch.arange(width).view(1, 1, width)
    if bool((n <= budget).all()):  # every page of every request fits: nothing to score
        fits_all = torch.where(idx < n, table[:, None, :], -1).expand(batch, kv_heads, width)
        return _Plan(width, table, fits_all=fits_all)
    always = (idx < n) & ((idx < sink_pages) | (idx >= n - local_pages) | (n <= budget))
    key_base = torch.where(always, float("inf"), torch.where(idx < n, 0.0, float("-inf")))
    extra = (budget - sink_pages - local_pages).clamp(min=0)
    count = torch.where(n <= budget, n, n.clamp(max=sink_pages + local_pages) + extra)
    take = torch.arange(min(max_budget, width)) < count
    return _Plan(width, table, rows=table.clamp(min=0).reshape(-1), key_base=key_base, take=take)


def block_sparse_indexer_cpu(
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
    scratch: dict | None = None,
) -> torch.Tensor:
    """Physical pages each (request, KV head) attends to under ``block_sparse_attention``, on CPU.

    Arguments and output as :func:`~vortex_rl.kernels.indexer.block_sparse_indexer` (CPU tensors):
    ``[batch, kv_heads, max_budget]`` int32, all ``n`` pages when ``n <= budget``, else the sink pages,
    the ``budget - sink - local`` best-scoring pages of ``[sink, n - local)`` (fp32 scores of the
    group-averaged query against each page's centroid) and the local pages, as ``page_table`` entries in
    ascending logical order, ``-1`` after. ``scratch``: the decode step's dict
    (:mod:`~vortex_rl.kernels.cpu_step`), where what depends on the step only is derived once.
    """
    _check_indexer_inputs(q, centroids, page_table, seq_lens, budgets, sink_pages, local_pages, max_budget, page_size)
    if q.device.type != "cpu":
        raise ValueError(f"block_sparse_indexer_cpu takes CPU tensors, got q on {q.device}")
    batch, kv_heads = q.shape[0], centroids.shape[1]
    result = _output(out, (batch, kv_heads, max_budget), q.device)
    if batch == 0 or max_budget == 0:
        return result
    statics = dict(sink_pages=sink_pages, local_pages=local_pages, max_budget=max_budget, page_size=page_size,
                   kv_heads=kv_heads)
    plan = once_per_step(scratch, ("block_sparse_indexer", *statics.values()), (page_table, seq_lens, budgets),
                         lambda: _plan(page_table, seq_lens, budgets, **statics))
    taken = plan.fits_all if plan.fits_all is not None else _top_pages(q, centroids, plan)
    if taken.shape[-1] < max_budget:
        result[..., taken.shape[-1]:] = -1
    result[..., :taken.shape[-1]] = taken
    return result


def _top_pages(q: torch.Tensor, centroids: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """The chosen physical pages ``[batch, kv_heads, min(max_budget, width)]`` in ascending logical order,
    ``-1`` after: one ``topk`` ranks the kept pages (``+inf``) first, then candidates by score; each
    request takes its first ranks (``plan.take``), sorted back into page order."""
    width = plan.width
    key = _centroid_scores(q, centroids, plan.rows, width) + plan.key_base
    ranked = key.topk(plan.take.shape[-1], dim=-1).indices  # [batch, kv_heads, k], best first
    ascending = torch.where(plan.take, ranked, width).sort(dim=-1).values
    physical = torch.gather(plan.table, 1, ascending.clamp(max=width - 1).flatten(1)).view(ascending.shape)
    return torch.where(ascending < width, physical, -1)

"""Page selection of the ``block_sparse_attention`` flow on CPU: the product path where Triton does not run.

Same signature and output as :func:`~vortex_rl.kernels.indexer.block_sparse_indexer_ref`, with the
per-layer work of a decode step in a handful of ops:

- the centroids of every page of every request are copied with one ``index_select`` of whole rows
  (``kv_heads * head_dim`` values per page), and scored with one ``bmm`` against a block-diagonal
  matrix of the group-averaged queries (``[batch, pages, kv_heads * head_dim] @ [batch, kv_heads *
  head_dim, kv_heads]``): no permuted copy of the centroids;
- one ``topk`` of budget width ranks every page, with the pages a request always keeps (sink, local,
  or all of them when they fit) at ``+inf``; each request takes its first ``count`` ranks and one sort
  of those ``budget`` ids puts them in ascending order (67 torch ops a layer at SmolLM2's shape; a mask
  per kind of page, a scatter and a compaction took 92, which at batch 1 cost more than the scoring);
- on CPU the lengths are read on the host for free: the page row is trimmed to the longest request, and
  a step where every request fits its budget skips the scoring.
"""

from __future__ import annotations

import torch

from vortex_rl.kernels.indexer import _check_indexer_inputs, _output


def _page_counts(page_table: torch.Tensor, seq_lens: torch.Tensor, page_size: int | None) -> torch.Tensor:
    """``[batch]`` int64 pages per request, from the lengths or (``page_size=None``) the table."""
    if page_size is None:
        return (page_table >= 0).sum(dim=1)
    return ((seq_lens.long() + page_size - 1) // page_size).clamp(max=page_table.shape[1])


def _centroid_scores(q: torch.Tensor, centroids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``mean(q over the group) . centroid`` for every page of ``table [batch, width]`` (int64, clamped):
    ``[batch, kv_heads, width]`` float32."""
    batch, q_heads, head_dim = q.shape
    kv_heads = centroids.shape[1]
    width = table.shape[1]
    rows = torch.index_select(centroids.reshape(centroids.shape[0], kv_heads * head_dim), 0, table.reshape(-1))
    rows = rows.view(batch, width, kv_heads * head_dim).float()
    q_mean = q.float().view(batch, kv_heads, q_heads // kv_heads, head_dim).mean(dim=2)  # [b, kv, d]
    # Block diagonal: column h holds q_mean[:, h] in rows h * head_dim .. (h + 1) * head_dim. It is built
    # as its transpose and passed as a transposed view: MKL's batched product with a row-major 3-column
    # right operand ran 3x slower (SmolLM2 at 16 x 8K, 30 layers: 39 -> 14 ms a step).
    eye = torch.eye(kv_heads, dtype=torch.float32)
    block_t = (eye[None, :, :, None] * q_mean[:, None, :, :]).reshape(batch, kv_heads, kv_heads * head_dim)
    return torch.bmm(rows, block_t.transpose(1, 2)).transpose(1, 2)  # [b, kv, width]


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
) -> torch.Tensor:
    """Physical pages each (request, KV head) attends to under ``block_sparse_attention``, on CPU.

    Arguments and output as :func:`~vortex_rl.kernels.indexer.block_sparse_indexer` (CPU tensors):
    ``[batch, kv_heads, max_budget]`` int32, all ``n`` pages when ``n <= budget``, else the sink pages,
    the ``budget - sink - local`` best-scoring pages of ``[sink, n - local)`` (fp32 scores of the
    group-averaged query against each page's centroid) and the local pages, as ``page_table`` entries in
    ascending logical order, ``-1`` after.
    """
    _check_indexer_inputs(q, centroids, page_table, seq_lens, budgets, sink_pages, local_pages, max_budget, page_size)
    if q.device.type != "cpu":
        raise ValueError(f"block_sparse_indexer_cpu takes CPU tensors, got q on {q.device}")
    batch, kv_heads = q.shape[0], centroids.shape[1]
    result = _output(out, (batch, kv_heads, max_budget), q.device)
    if batch == 0 or max_budget == 0:
        return result
    n = _page_counts(page_table, seq_lens, page_size).view(batch, 1, 1)
    budget = budgets.long().clamp(max=max_budget).view(batch, 1, 1)
    width = max(int(n.max()), 1)
    table = page_table[:, :width].long()
    idx = torch.arange(width).view(1, 1, width)
    if bool((n <= budget).all()):  # every page of every request fits: nothing to score
        keep = (idx < n).expand(batch, 1, width)
        taken = torch.where(keep, table[:, None, :], -1).expand(batch, kv_heads, width)
    else:
        taken = _top_pages(q, centroids, table, n, budget, idx, sink_pages, local_pages, max_budget)
    if taken.shape[-1] < max_budget:
        result[..., taken.shape[-1]:] = -1
    result[..., :taken.shape[-1]] = taken
    return result


def _top_pages(q, centroids, table, n, budget, idx, sink_pages, local_pages, max_budget):
    """The chosen physical pages ``[batch, kv_heads, min(max_budget, width)]`` in ascending logical order,
    ``-1`` after. One ``topk`` ranks every page: the pages a request always keeps (sink and local, or all of
    them when they fit its budget) rank first at ``+inf``, candidates by score, pages past ``n`` last."""
    scores = _centroid_scores(q, centroids, table.clamp(min=0))
    always = (idx < n) & ((idx < sink_pages) | (idx >= n - local_pages) | (n <= budget))
    key = torch.where(always, float("inf"), torch.where(idx < n, scores, float("-inf")))
    k = min(max_budget, table.shape[1])
    ranked = key.topk(k, dim=-1).indices  # [batch, kv_heads, k], best first
    # How many of the ranked pages a request takes: all of them if they fit, else its fixed pages (the
    # union of sink and local within n) and the budget left after sink + local.
    extra = (budget - sink_pages - local_pages).clamp(min=0)
    count = torch.where(n <= budget, n, n.clamp(max=sink_pages + local_pages) + extra)
    ascending = torch.where(torch.arange(k) < count, ranked, table.shape[1]).sort(dim=-1).values
    logical = ascending.clamp(max=table.shape[1] - 1).flatten(1)
    physical = torch.gather(table, 1, logical).view(ascending.shape)
    return torch.where(ascending < table.shape[1], physical, -1)

"""Page selection of the ``block_sparse_attention`` flow on CPU: the product path where Triton does not run.

Same signature and output as :func:`~vortex_rl.kernels.indexer.block_sparse_indexer_ref`, with the
per-layer work of a decode step in a handful of ops:

- the centroids of every page of every request are copied with one ``index_select`` of whole rows
  (``kv_heads * head_dim`` values per page), and scored with one ``bmm`` against a block-diagonal
  matrix of the group-averaged queries (``[batch, pages, kv_heads * head_dim] @ [batch, kv_heads *
  head_dim, kv_heads]``): no permuted copy of the centroids;
- the chosen ids are compacted in ascending order with a cumulative sum and one scatter, not a sort of
  the whole page row;
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


def _ascending(chosen: torch.Tensor, max_budget: int) -> torch.Tensor:
    """Ids of the ``True`` entries of ``chosen [batch, kv_heads, width]`` in ascending order, ``-1``
    after: ``[batch, kv_heads, max_budget]`` int32 (at most ``max_budget`` are chosen per row)."""
    batch, kv_heads, width = chosen.shape
    slot = torch.cumsum(chosen, dim=-1) - 1
    slot = torch.where(chosen, slot, torch.full_like(slot, max_budget))  # unchosen: a discarded column
    ids = torch.arange(width, dtype=torch.int32).expand(batch, kv_heads, width)
    out = torch.full((batch, kv_heads, max_budget + 1), -1, dtype=torch.int32)
    return out.scatter_(-1, slot, ids)[..., :max_budget]


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
    n = _page_counts(page_table, seq_lens, page_size)
    width = max(int(n.max()), 1)
    budget = budgets.long().clamp(max=max_budget)
    idx = torch.arange(width)[None, None, :]
    exists = idx < n[:, None, None]
    if bool((n <= budget).all()):  # every page of every request fits: nothing to score
        result.copy_(_to_physical(_ascending(exists.expand(batch, kv_heads, width), max_budget), page_table))
        return result
    scores = _centroid_scores(q, centroids, page_table[:, :width].long().clamp(min=0))
    is_candidate = (idx >= sink_pages) & (idx < (n - local_pages)[:, None, None])
    k = min(max(max_budget - sink_pages - local_pages, 0), width)
    ranked = torch.where(is_candidate, scores, torch.full_like(scores, float("-inf"))).topk(k, dim=-1).indices
    rank_ok = torch.arange(k)[None, None, :] < (budget - sink_pages - local_pages)[:, None, None]
    taken = rank_ok & torch.gather(is_candidate.expand_as(scores), -1, ranked)
    top = torch.zeros(scores.shape, dtype=torch.bool).scatter_(-1, ranked, taken)
    fixed = ((idx < sink_pages) | (idx >= (n - local_pages)[:, None, None])) & exists
    chosen = torch.where((n <= budget)[:, None, None], exists, fixed | top)
    result.copy_(_to_physical(_ascending(chosen, max_budget), page_table))
    return result


def _to_physical(logical: torch.Tensor, page_table: torch.Tensor) -> torch.Tensor:
    """``logical [batch, kv_heads, budget]`` (``-1`` padding) as the ``page_table`` entries they name."""
    batch = logical.shape[0]
    phys = torch.gather(page_table.long(), 1, logical.long().clamp(min=0).view(batch, -1)).view(logical.shape)
    return torch.where(logical >= 0, phys, torch.full_like(phys, -1))

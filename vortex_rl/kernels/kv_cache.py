"""Writing tokens into the paged KV cache and pooling per-page state: plain-torch references.

Slots: token slot ``loc = physical_page * page_size + offset`` (SGLang's ``out_cache_loc`` convention).
Contract for ``loc``: the tokens written into one page appear contiguously and in increasing slot order
(true for any append-only paged cache: each request appends to its own last page). So the last listed
token of a page tells how many tokens that page holds after the write.
"""

from __future__ import annotations

import torch

POOLS = ("mean", "max", "min", "sum")


def write_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor
) -> None:
    """Scatter new tokens into the cache in place.

    k, v: ``[num_tokens, kv_heads, head_dim]``; k_cache, v_cache: ``[num_pages, kv_heads, page_size,
    head_dim]``; loc: ``[num_tokens]`` int slots.
    """
    page_size = k_cache.shape[2]
    loc = loc.long()
    page, offset = loc // page_size, loc % page_size
    k_cache[page, :, offset] = k.to(k_cache.dtype)
    v_cache[page, :, offset] = v.to(v_cache.dtype)


def page_fill_from_loc(loc: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each written token: its physical page and how many tokens that page holds after the write.

    Uses the contiguity contract of ``loc`` (module docstring), so no host sync is needed.
    Returns ``(page, fill)``, both ``[num_tokens]`` int64.
    """
    loc = loc.long()
    page, offset = loc // page_size, loc % page_size
    n = loc.numel()
    if n == 0:
        return page, offset + 1
    index = torch.arange(n, device=loc.device)
    is_last = torch.ones(n, dtype=torch.bool, device=loc.device)
    is_last[:-1] = page[1:] != page[:-1]
    # Index of the last token of each token's run: a reverse cumulative min over "last" positions.
    last_at = torch.where(is_last, index, torch.full_like(index, n))
    run_end = torch.flip(torch.cummin(torch.flip(last_at, [0]), 0).values, [0])
    return page, offset[run_end] + 1


def pool_pages_ref(x_cache: torch.Tensor, out: torch.Tensor, loc: torch.Tensor, *, pool: str = "mean") -> None:
    """Recompute ``out`` for every page touched by ``loc``, pooling over the page's valid tokens.

    x_cache: ``[num_pages, kv_heads, page_size, head_dim]``; out: ``[num_pages, kv_heads, 1, head_dim]``
    (the per-page state, e.g. key centroids), updated in place; pool: one of ``POOLS``.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS}")
    if out.dim() != 4 or out.shape[0] != x_cache.shape[0] or out.shape[1] != x_cache.shape[1] or out.shape[2] != 1:
        raise ValueError(
            f"out must be [num_pages={x_cache.shape[0]}, kv_heads={x_cache.shape[1]}, 1, head_dim], "
            f"got {tuple(out.shape)}"
        )
    page_size = x_cache.shape[2]
    page, fill = page_fill_from_loc(loc, page_size)
    x = x_cache[page].float()  # [num_tokens, kv_heads, page_size, head_dim]
    valid = (torch.arange(page_size, device=x.device)[None, :] < fill[:, None])[:, None, :, None]
    if pool in ("mean", "sum"):
        value = torch.where(valid, x, torch.zeros_like(x)).sum(dim=2)
        if pool == "mean":
            value = value / fill.to(value.dtype)[:, None, None]
    elif pool == "max":
        value = torch.where(valid, x, torch.full_like(x, float("-inf"))).amax(dim=2)
    else:
        value = torch.where(valid, x, torch.full_like(x, float("inf"))).amin(dim=2)
    # Every token of a page computes the same value, so duplicate writes agree.
    out[page, :, 0] = value.to(out.dtype)


def update_centroids_ref(k_cache: torch.Tensor, centroids: torch.Tensor, loc: torch.Tensor) -> None:
    """Key centroid (mean of the valid keys, per KV head) of every page touched by ``loc``."""
    pool_pages_ref(k_cache, centroids, loc, pool="mean")

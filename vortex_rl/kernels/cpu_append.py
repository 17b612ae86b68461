"""Writing decode tokens into the paged KV cache on CPU: the product path where Triton does not run.

Same signatures and results as :func:`~vortex_rl.kernels.kv_cache.write_kv_ref` and
:func:`~vortex_rl.kernels.append_kv.append_kv_and_centroids_ref` (bit for bit: the same fp32 sum and
division per centroid), in 29 torch ops a layer instead of the references' 45 (SmolLM2, one decode
token): at batch 1 a decode step's fixed cost per op, not its bytes, sets the time on CPU.

- a token's K (V) row goes in with one ``index_put_`` on the ``[num_pages, page_size, kv_heads,
  head_dim]`` view of the cache, indexed by (page, offset);
- only the last token of each page's run refreshes that page's centroid (the ``loc`` contract of
  :mod:`vortex_rl.kernels.kv_cache`: a page's tokens are listed together, in slot order), so a prefill
  of thousands of tokens averages each page once instead of once per token as the reference does.

Negative slots are skipped, as the Triton kernels skip them (padding rows of a fixed-size batch).
"""

from __future__ import annotations

import torch

from vortex_rl.kernels.append_kv import check_append_inputs
from vortex_rl.kernels.kv_cache import check_cache_write


def _written(k: torch.Tensor, v: torch.Tensor, loc: torch.Tensor):
    """``(k, v, loc int64)`` without the rows at negative slots."""
    loc = loc.long()
    skipped = loc < 0
    if bool(skipped.any()):
        kept = ~skipped
        return k[kept], v[kept], loc[kept]
    return k, v, loc


def _scatter(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             page: torch.Tensor, offset: torch.Tensor) -> None:
    # [num_pages, page_size, kv_heads, head_dim] views: a token is one (page, offset) entry of each.
    k_cache.transpose(1, 2).index_put_((page, offset), k.to(k_cache.dtype))
    v_cache.transpose(1, 2).index_put_((page, offset), v.to(v_cache.dtype))


def write_kv_cpu(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 loc: torch.Tensor) -> None:
    """Scatter new tokens into the cache in place, on CPU (semantics of
    :func:`~vortex_rl.kernels.kv_cache.write_kv`).

    k, v: ``[num_tokens, kv_heads, head_dim]``; k_cache, v_cache: ``[num_pages, kv_heads, page_size,
    head_dim]``; loc: ``[num_tokens]`` int32/int64 slots ``page * page_size + offset``, negative skipped.
    """
    check_cache_write(k, k_cache, loc, "k")
    check_cache_write(v, v_cache, loc, "v")
    if k.device.type != "cpu":
        raise ValueError(f"write_kv_cpu takes CPU tensors, got k on {k.device}")
    k, v, loc = _written(k, v, loc)
    if loc.numel():
        page_size = k_cache.shape[2]
        _scatter(k, v, k_cache, v_cache, loc // page_size, loc % page_size)


def append_kv_and_centroids_cpu(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    centroids: torch.Tensor,
    loc: torch.Tensor,
) -> None:
    """Write tokens into the cache and refresh the key centroids of the pages they touch, on CPU.

    Same arguments and result as :func:`~vortex_rl.kernels.append_kv.append_kv_and_centroids`:
    k, v ``[num_tokens, kv_heads, head_dim]``; caches ``[num_pages, kv_heads, page_size, head_dim]``;
    centroids ``[num_pages, kv_heads, 1, head_dim]`` (the mean of each touched page's valid keys, fp32
    accumulation); loc ``[num_tokens]`` slots, each page's tokens together and in slot order.
    """
    check_append_inputs(k, v, k_cache, v_cache, centroids, loc)
    if k.device.type != "cpu":
        raise ValueError(f"append_kv_and_centroids_cpu takes CPU tensors, got k on {k.device}")
    k, v, loc = _written(k, v, loc)
    num_tokens = loc.numel()
    if num_tokens == 0:
        return
    page_size = k_cache.shape[2]
    page, offset = loc // page_size, loc % page_size
    _scatter(k, v, k_cache, v_cache, page, offset)
    if num_tokens > 1:  # keep the last token of each page's run: its offset + 1 is the page's fill
        run_end = torch.ones(num_tokens, dtype=torch.bool)
        torch.ne(page[1:], page[:-1], out=run_end[:-1])
        if not bool(run_end.all()):
            page, offset = page[run_end], offset[run_end]
    fill = offset + 1
    keys = torch.index_select(k_cache, 0, page).float()  # [pages, kv_heads, page_size, head_dim]
    valid = (torch.arange(page_size) < fill[:, None])[:, None, :, None]
    # The reference's ops in its order (masked sum, then divide), so the centroids agree bit for bit.
    mean = torch.where(valid, keys, 0.0).sum(dim=2) / fill.float()[:, None, None]
    centroids.select(2, 0).index_put_((page,), mean.to(centroids.dtype))

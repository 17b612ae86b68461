"""Writing decode tokens into the paged KV cache on CPU: the product path where Triton does not run.

Same signatures and results as :func:`~vortex_rl.kernels.kv_cache.write_kv_ref` and
:func:`~vortex_rl.kernels.append_kv.append_kv_and_centroids_ref` (bit for bit: the same fp32 sum and
division per centroid), in 14 torch ops a layer instead of the references' 45 (SmolLM2, one decode
token): at batch 1 a decode step's fixed cost per op, not its bytes, sets the time on CPU. Where the
step's tokens land is derived once per step (:mod:`.cpu_step`).

- a token's K (V) row goes in with one ``index_put_`` on the ``[num_pages, page_size, kv_heads,
  head_dim]`` view of the cache, indexed by (page, offset);
- only the last token of each page's run refreshes that page's centroid (the ``loc`` contract of
  :mod:`vortex_rl.kernels.kv_cache`: a page's tokens are listed together, in slot order), so a prefill
  of thousands of tokens averages each page once instead of once per token as the reference does.

Negative slots are skipped, as the Triton kernels skip them (padding rows of a fixed-size batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.kernels.append_kv import check_append_inputs
from vortex_rl.kernels.cpu_step import once_per_step
from vortex_rl.kernels.kv_cache import check_cache_write, run_ends


@dataclass
class _Slots:
    """Where a step's tokens go (the same in every layer): ``kept`` the rows at non-negative slots
    (``None``: all of them), their ``page`` and ``offset``; for the centroids, ``ends`` the pages whose
    run ends in this write, ``fill`` their tokens after it (float32, ``[pages, 1, 1]``) and ``valid``
    (``[pages, 1, page_size, 1]``) the slots that hold them."""

    kept: torch.Tensor | None
    page: torch.Tensor
    offset: torch.Tensor
    ends: torch.Tensor | None = None
    fill: torch.Tensor | None = None
    valid: torch.Tensor | None = None


def _slots(loc: torch.Tensor, page_size: int, centroids: bool) -> _Slots:
    loc = loc.long()
    kept = None
    if loc.numel() and int(loc.min()) < 0:
        kept = (loc >= 0).nonzero().squeeze(1)
        loc = loc[kept]
    page, offset = loc // page_size, loc % page_size
    slots = _Slots(kept, page, offset)
    if centroids and loc.numel():
        # Keep the last token of each page's run: its offset + 1 is the page's fill.
        run_end = run_ends(page)
        ends, last = (page, offset) if bool(run_end.all()) else (page[run_end], offset[run_end])
        slots.ends, slots.fill = ends, (last + 1).float().view(-1, 1, 1)
        slots.valid = (torch.arange(page_size) < last[:, None] + 1).view(-1, 1, page_size, 1)
    return slots


def _scatter(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: _Slots) -> None:
    if slots.kept is not None:
        k, v = k[slots.kept], v[slots.kept]
    # [num_pages, page_size, kv_heads, head_dim] views: a token is one (page, offset) entry of each.
    k_cache.transpose(1, 2).index_put_((slots.page, slots.offset), k.to(k_cache.dtype))
    v_cache.transpose(1, 2).index_put_((slots.page, slots.offset), v.to(v_cache.dtype))


def write_kv_cpu(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 loc: torch.Tensor, *, scratch: dict | None = None) -> None:
    """Scatter new tokens into the cache in place, on CPU (semantics of
    :func:`~vortex_rl.kernels.kv_cache.write_kv`).

    k, v: ``[num_tokens, kv_heads, head_dim]``; k_cache, v_cache: ``[num_pages, kv_heads, page_size,
    head_dim]``; loc: ``[num_tokens]`` int32/int64 slots ``page * page_size + offset``, negative skipped;
    scratch: the decode step's dict (:mod:`~vortex_rl.kernels.cpu_step`), where the slots' pages and
    offsets are derived once.
    """
    check_cache_write(k, k_cache, loc, "k")
    check_cache_write(v, v_cache, loc, "v")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} differ in shape")
    if k.device.type != "cpu":
        raise ValueError(f"write_kv_cpu takes CPU tensors, got k on {k.device}")
    page_size = k_cache.shape[2]
    slots = once_per_step(scratch, ("write_kv", page_size), (loc,), lambda: _slots(loc, page_size, False))
    if slots.page.numel():
        _scatter(k, v, k_cache, v_cache, slots)


def append_kv_and_centroids_cpu(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    centroids: torch.Tensor,
    loc: torch.Tensor,
    *,
    scratch: dict | None = None,
) -> None:
    """Write tokens into the cache and refresh the key centroids of the pages they touch, on CPU.

    Same arguments and result as :func:`~vortex_rl.kernels.append_kv.append_kv_and_centroids`:
    k, v ``[num_tokens, kv_heads, head_dim]``; caches ``[num_pages, kv_heads, page_size, head_dim]``;
    centroids ``[num_pages, kv_heads, 1, head_dim]`` (the mean of each touched page's valid keys, fp32
    accumulation); loc ``[num_tokens]`` slots, each page's tokens together and in slot order;
    scratch as in :func:`write_kv_cpu`.
    """
    check_append_inputs(k, v, k_cache, v_cache, centroids, loc)
    if k.device.type != "cpu":
        raise ValueError(f"append_kv_and_centroids_cpu takes CPU tensors, got k on {k.device}")
    page_size = k_cache.shape[2]
    slots = once_per_step(scratch, ("append_kv_and_centroids", page_size), (loc,), lambda: _slots(loc, page_size, True))
    if not slots.page.numel():
        return
    _scatter(k, v, k_cache, v_cache, slots)
    keys = torch.index_select(k_cache, 0, slots.ends).float()  # [pages, kv_heads, page_size, head_dim]
    # The reference's ops in its order (masked sum, then divide), so the centroids agree bit for bit.
    mean = torch.where(slots.valid, keys, 0.0).sum(dim=2) / slots.fill
    centroids.select(2, 0).index_put_((slots.ends,), mean.to(centroids.dtype))

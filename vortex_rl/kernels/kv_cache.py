"""Writing tokens into the paged KV cache and pooling per-page state: Triton kernels and torch references.

Slots: token slot ``loc = physical_page * page_size + offset`` (SGLang's ``out_cache_loc`` convention).
Contract for ``loc``: the tokens written into one page appear contiguously and in increasing slot order
(true for any append-only paged cache: each request appends to its own last page). So the last listed
token of a page tells how many tokens that page holds after the write.

The kernels also skip negative slots (padding rows of a CUDA-graph batch). The references do not:
Python indexing would wrap a negative slot around, so negative slots are for the kernels only.
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


def run_ends(page: torch.Tensor) -> torch.Tensor:
    """``[num_tokens]`` bool: whether each written token is the last listed one of its page's run, for
    the tokens' pages ``page [num_tokens]`` (the ``loc`` contract: a page's tokens are listed together)."""
    is_last = torch.ones(page.shape[0], dtype=torch.bool, device=page.device)
    torch.ne(page[1:], page[:-1], out=is_last[:-1])
    return is_last


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
    is_last = run_ends(page)
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


# ------------------------------------------------------------------------------------------------ kernels
_POOL_CODE = {name: i for i, name in enumerate(POOLS)}


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, loc_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcp, stride_kch, stride_kcs, stride_vcp, stride_vch, stride_vcs,
    num_heads, head_dim,
    PAGE_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(loc_ptr + t).to(tl.int64)
    page = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    # A 0-d condition joins a block mask through tl.where: `&` with it breaks in the interpreter.
    mask = tl.where(slot >= 0, (h < num_heads) & (d < head_dim), False)
    k = tl.load(k_ptr + t * stride_kt + h * stride_kh + d, mask=mask)
    v = tl.load(v_ptr + t * stride_vt + h * stride_vh + d, mask=mask)
    k_dst = k_cache_ptr + page * stride_kcp + h * stride_kch + offset * stride_kcs + d
    v_dst = v_cache_ptr + page * stride_vcp + h * stride_vch + offset * stride_vcs + d
    tl.store(k_dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _page_run_end(loc_ptr, t, num_tokens, PAGE_SIZE: tl.constexpr):
    """(slot, page, is_last): whether token ``t`` is the last listed token of its page's run."""
    slot = tl.load(loc_ptr + t).to(tl.int64)
    has_next = t + 1 < num_tokens
    nxt = tl.load(loc_ptr + t + 1, mask=has_next, other=-1).to(tl.int64)
    page = slot // PAGE_SIZE
    # Integer division truncates toward zero, so a negative neighbour is tested on its own.
    is_last = (slot >= 0) & ((nxt < 0) | (nxt // PAGE_SIZE != page))
    return slot, page, is_last


@triton.jit
def _pool_pages_kernel(
    x_ptr, out_ptr, loc_ptr,
    num_tokens, head_dim,
    stride_xp, stride_xh, stride_xs, stride_op, stride_oh,
    PAGE_SIZE: tl.constexpr, POOL: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    slot, page, is_last = _page_run_end(loc_ptr, t, num_tokens, PAGE_SIZE)
    fill = slot % PAGE_SIZE + 1
    s = tl.arange(0, PAGE_SIZE)[:, None]
    d = tl.arange(0, BLOCK_D)
    # Only the run's last token pools; the others load nothing.
    mask = tl.where(is_last, (s < fill) & (d[None, :] < head_dim), False)
    x = tl.load(x_ptr + page * stride_xp + h * stride_xh + s * stride_xs + d[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    if POOL == 0:
        value = tl.sum(x, axis=0) / fill.to(tl.float32)
    elif POOL == 1:
        value = tl.max(tl.where(mask, x, float("-inf")), axis=0)
    elif POOL == 2:
        value = tl.min(tl.where(mask, x, float("inf")), axis=0)
    else:
        value = tl.sum(x, axis=0)
    dst = out_ptr + page * stride_op + h * stride_oh + d
    tl.store(dst, value.to(out_ptr.dtype.element_ty), mask=tl.where(is_last, d < head_dim, False))


# ---------------------------------------------------------------------------------------------- launchers
def check_cache_write(k: torch.Tensor, k_cache: torch.Tensor, loc: torch.Tensor, what: str = "k") -> None:
    """``k: [num_tokens, kv_heads, head_dim]`` must fit ``k_cache: [num_pages, kv_heads, page_size, head_dim]``."""
    if k_cache.dim() != 4 or k_cache.stride(-1) != 1:
        raise ValueError(
            f"{what}_cache must be [num_pages, kv_heads, page_size, head_dim] with a unit last stride, got "
            f"shape {tuple(k_cache.shape)} strides {k_cache.stride()}"
        )
    if k.dim() != 3 or tuple(k.shape[1:]) != (k_cache.shape[1], k_cache.shape[3]):
        raise ValueError(
            f"{what} must be [num_tokens, kv_heads={k_cache.shape[1]}, head_dim={k_cache.shape[3]}], "
            f"got {tuple(k.shape)}"
        )
    check_int_tensor("loc", loc, (k.shape[0],))
    check_same_device(**{what: k, f"{what}_cache": k_cache, "loc": loc})


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor) -> None:
    """Scatter new tokens into the paged cache in place (Triton; semantics of :func:`write_kv_ref`).

    Parameters
    ----------
    k, v : Tensor ``[num_tokens, kv_heads, head_dim]``, any float dtype (cast to the cache's).
    k_cache, v_cache : Tensor ``[num_pages, kv_heads, page_size, head_dim]``, unit last stride.
    loc : Tensor ``[num_tokens]`` int32/int64 slots ``page * page_size + offset``; negative slots are skipped.
    """
    require_triton("write_kv")
    check_cache_write(k, k_cache, loc, "k")
    check_cache_write(v, v_cache, loc, "v")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} differ in shape")
    if k.shape[0] == 0:
        return
    k, v, loc = unit_stride(k), unit_stride(v), unit_stride(loc)
    _, kv_heads, page_size, head_dim = k_cache.shape
    launch(
        _write_kv_kernel, (k.shape[0],),
        k_ptr=k, v_ptr=v, k_cache_ptr=k_cache, v_cache_ptr=v_cache, loc_ptr=loc,
        stride_kt=k.stride(0), stride_kh=k.stride(1), stride_vt=v.stride(0), stride_vh=v.stride(1),
        stride_kcp=k_cache.stride(0), stride_kch=k_cache.stride(1), stride_kcs=k_cache.stride(2),
        stride_vcp=v_cache.stride(0), stride_vch=v_cache.stride(1), stride_vcs=v_cache.stride(2),
        num_heads=kv_heads, head_dim=head_dim,
        PAGE_SIZE=page_size, BLOCK_H=next_pow2(kv_heads), BLOCK_D=next_pow2(head_dim),
    )


def pool_pages(x_cache: torch.Tensor, out: torch.Tensor, loc: torch.Tensor, *, pool: str = "mean") -> None:
    """Recompute ``out`` for every page touched by ``loc`` (Triton; semantics of :func:`pool_pages_ref`).

    Parameters
    ----------
    x_cache : Tensor ``[num_pages, kv_heads, page_size, head_dim]``, unit last stride.
    out : Tensor ``[num_pages, kv_heads, 1, head_dim]``, updated in place (only the last listed token of
        each page's run writes, so the pass costs one page read per touched page).
    loc : Tensor ``[num_tokens]`` int32/int64 slots; negative slots are skipped.
    pool : one of ``"mean"``, ``"max"``, ``"min"``, ``"sum"`` over the page's valid tokens (fp32 math).
    """
    require_triton("pool_pages")
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS}")
    if x_cache.dim() != 4 or x_cache.stride(-1) != 1:
        raise ValueError(
            f"x_cache must be [num_pages, kv_heads, page_size, head_dim] with a unit last stride, got "
            f"shape {tuple(x_cache.shape)} strides {x_cache.stride()}"
        )
    num_pages, kv_heads, page_size, head_dim = x_cache.shape
    if page_size & (page_size - 1):
        raise ValueError(f"page_size={page_size} (x_cache.shape[2]) must be a power of two")
    if tuple(out.shape) != (num_pages, kv_heads, 1, head_dim) or out.stride(-1) != 1:
        raise ValueError(
            f"out must be [num_pages={num_pages}, kv_heads={kv_heads}, 1, head_dim={head_dim}] with a unit "
            f"last stride, got shape {tuple(out.shape)}"
        )
    check_int_tensor("loc", loc, (None,))
    check_same_device(x_cache=x_cache, out=out, loc=loc)
    if loc.numel() == 0:
        return
    loc = unit_stride(loc)
    launch(
        _pool_pages_kernel, (loc.shape[0], kv_heads),
        x_ptr=x_cache, out_ptr=out, loc_ptr=loc,
        num_tokens=loc.shape[0], head_dim=head_dim,
        stride_xp=x_cache.stride(0), stride_xh=x_cache.stride(1), stride_xs=x_cache.stride(2),
        stride_op=out.stride(0), stride_oh=out.stride(1),
        PAGE_SIZE=page_size, POOL=_POOL_CODE[pool], BLOCK_D=next_pow2(head_dim),
    )

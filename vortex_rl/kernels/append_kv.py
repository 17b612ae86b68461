"""KV append fused with the key-centroid update of every touched page: one launch instead of two.

The program of a page's last listed token averages the page's valid keys. Keys written by this same
launch are read from the inputs, not the cache, since the programs that store them may not have run;
this needs the tokens of one page to occupy consecutive slots (append-only caches do), a stricter form
of the ``loc`` contract in :mod:`vortex_rl.kernels.kv_cache`.
"""

import torch

from vortex_rl.kernels._triton import check_same_device, launch, next_pow2, require_triton, tl, triton, unit_stride
from vortex_rl.kernels.kv_cache import _page_run_end, check_cache_write, update_centroids_ref, write_kv_ref


@triton.jit
def _append_kv_centroids_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, centroids_ptr, loc_ptr,
    num_tokens, head_dim,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcp, stride_kch, stride_kcs, stride_vcp, stride_vch, stride_vcs,
    stride_cp, stride_ch,
    PAGE_SIZE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    slot, page, is_last = _page_run_end(loc_ptr, t, num_tokens, PAGE_SIZE)
    offset = slot % PAGE_SIZE
    d = tl.arange(0, BLOCK_D)
    d_ok = d < head_dim
    w_mask = tl.where(slot >= 0, d_ok, False)  # `&` with a 0-d mask breaks in the interpreter
    k = tl.load(k_ptr + t * stride_kt + h * stride_kh + d, mask=w_mask).to(k_cache_ptr.dtype.element_ty)
    v = tl.load(v_ptr + t * stride_vt + h * stride_vh + d, mask=w_mask)
    tl.store(k_cache_ptr + page * stride_kcp + h * stride_kch + offset * stride_kcs + d, k, mask=w_mask)
    v_dst = v_cache_ptr + page * stride_vcp + h * stride_vch + offset * stride_vcs + d
    tl.store(v_dst, v.to(v_cache_ptr.dtype.element_ty), mask=w_mask)

    s = tl.arange(0, PAGE_SIZE)
    src = t - (offset - s)  # the token that holds slot s if this launch wrote it
    valid = tl.where(is_last, s <= offset, False)
    in_run = valid & (src >= 0)
    src_slot = tl.load(loc_ptr + src, mask=in_run, other=-1).to(tl.int64)
    from_input = in_run & (src_slot == page * PAGE_SIZE + s)
    from_cache = valid & ~from_input
    k_in = tl.load(
        k_ptr + src[:, None] * stride_kt + h * stride_kh + d[None, :],
        mask=from_input[:, None] & d_ok[None, :], other=0.0,
    )
    # Round through the cache dtype so the centroid averages exactly what the cache holds.
    k_in = k_in.to(k_cache_ptr.dtype.element_ty).to(tl.float32)
    k_old = tl.load(
        k_cache_ptr + page * stride_kcp + h * stride_kch + s[:, None] * stride_kcs + d[None, :],
        mask=from_cache[:, None] & d_ok[None, :], other=0.0,
    ).to(tl.float32)
    centroid = tl.sum(k_in + k_old, axis=0) / (offset + 1).to(tl.float32)
    dst = centroids_ptr + page * stride_cp + h * stride_ch + d
    tl.store(dst, centroid.to(centroids_ptr.dtype.element_ty), mask=tl.where(is_last, d_ok, False))


def check_append_inputs(k, v, k_cache, v_cache, centroids, loc) -> None:
    """Raise ``ValueError`` naming the argument when the append kernels' inputs do not fit together."""
    check_cache_write(k, k_cache, loc, "k")
    check_cache_write(v, v_cache, loc, "v")
    num_pages, kv_heads, _, head_dim = k_cache.shape
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} differ in shape")
    if tuple(centroids.shape) != (num_pages, kv_heads, 1, head_dim) or centroids.stride(-1) != 1:
        raise ValueError(
            f"centroids must be [num_pages={num_pages}, kv_heads={kv_heads}, 1, head_dim={head_dim}] with a "
            f"unit last stride, got {tuple(centroids.shape)}"
        )
    check_same_device(k=k, centroids=centroids)


def append_kv_and_centroids(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    centroids: torch.Tensor,
    loc: torch.Tensor,
) -> None:
    """Write tokens into the cache and refresh the key centroids of the pages they touch (Triton).

    Same result as :func:`append_kv_and_centroids_ref`. Needs each page's tokens at consecutive slots.

    Parameters
    ----------
    k, v : Tensor ``[num_tokens, kv_heads, head_dim]``.
    k_cache, v_cache : Tensor ``[num_pages, kv_heads, page_size, head_dim]``, unit last stride.
    centroids : Tensor ``[num_pages, kv_heads, 1, head_dim]``, updated in place (fp32 accumulation).
    loc : Tensor ``[num_tokens]`` int32/int64 slots; negative slots are skipped.
    """
    require_triton("append_kv_and_centroids")
    check_append_inputs(k, v, k_cache, v_cache, centroids, loc)
    num_pages, kv_heads, page_size, head_dim = k_cache.shape
    if k.shape[0] == 0:
        return
    k, v, loc = unit_stride(k), unit_stride(v), unit_stride(loc)  # strided rows of a qkv output need no copy
    launch(
        _append_kv_centroids_kernel, (k.shape[0], kv_heads),
        k_ptr=k, v_ptr=v, k_cache_ptr=k_cache, v_cache_ptr=v_cache, centroids_ptr=centroids, loc_ptr=loc,
        num_tokens=k.shape[0], head_dim=head_dim,
        stride_kt=k.stride(0), stride_kh=k.stride(1), stride_vt=v.stride(0), stride_vh=v.stride(1),
        stride_kcp=k_cache.stride(0), stride_kch=k_cache.stride(1), stride_kcs=k_cache.stride(2),
        stride_vcp=v_cache.stride(0), stride_vch=v_cache.stride(1), stride_vcs=v_cache.stride(2),
        stride_cp=centroids.stride(0), stride_ch=centroids.stride(1),
        PAGE_SIZE=page_size, BLOCK_D=next_pow2(head_dim),
    )


def append_kv_and_centroids_ref(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    centroids: torch.Tensor,
    loc: torch.Tensor,
) -> None:
    """Plain torch: :func:`write_kv_ref` then :func:`update_centroids_ref`."""
    write_kv_ref(k, v, k_cache, v_cache, loc)
    update_centroids_ref(k_cache, centroids, loc)

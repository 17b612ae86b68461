"""Triton KV append, per-page pooling and the fused append + centroids against the torch references."""

import pytest
import torch

from tests.paged_batch import DEVICE, DTYPES
from vortex_rl.kernels import pool_pages_ref, write_kv_ref
from vortex_rl.kernels.append_kv import append_kv_and_centroids, append_kv_and_centroids_ref
from vortex_rl.kernels.kv_cache import POOLS, pool_pages, write_kv

PAGE = 16


def _cache(dtype, num_pages=10, kv_heads=2, head_dim=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (num_pages, kv_heads, PAGE, head_dim)
    return torch.randn(shape, generator=gen).to(DEVICE, dtype), torch.randn(shape, generator=gen).to(DEVICE, dtype)


def _tokens(n, kv_heads=2, head_dim=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, kv_heads, head_dim, generator=gen).to(DEVICE) for _ in range(2)]


# Decode: one token per request, at page starts, ends and middles. Prefill: whole runs of pages,
# one of them partial (17 tokens over pages 6 and 2), another ending on a page boundary.
DECODE = [3 * PAGE + 5, 7 * PAGE + 0, 1 * PAGE + 15, 9 * PAGE + 14]
PREFILL = [6 * PAGE + i for i in range(PAGE)] + [2 * PAGE] + [4 * PAGE + i for i in range(15)] + [8 * PAGE + 3]
LOCS = {"decode": DECODE, "prefill": PREFILL}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_write_kv_matches_reference(dtype, phase):
    loc = torch.tensor(LOCS[phase], device=DEVICE)
    k, v = _tokens(len(loc))
    got, want = _cache(dtype), _cache(dtype)
    write_kv(k, v, *got, loc.int())
    write_kv_ref(k, v, *want, loc)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_pool_pages_matches_reference(dtype, pool, phase):
    loc = torch.tensor(LOCS[phase], device=DEVICE)
    k_cache, _ = _cache(dtype)
    got = torch.zeros(10, 2, 1, 64, dtype=dtype, device=DEVICE)
    want = got.clone()
    pool_pages(k_cache, got, loc, pool=pool)
    pool_pages_ref(k_cache, want, loc, pool=pool)
    # fp32 sums in another order: equal up to one rounding of the output dtype.
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_pool_pages_leaves_untouched_pages_and_skips_negative_slots():
    k_cache, _ = _cache(torch.float32)
    out = torch.full((10, 2, 1, 64), 7.0, device=DEVICE)
    loc = torch.tensor([5 * PAGE + 2, -1, 3 * PAGE + 0], device=DEVICE)
    pool_pages(k_cache, out, loc, pool="max")
    untouched = [p for p in range(10) if p not in (3, 5)]
    assert (out[untouched] == 7.0).all()
    torch.testing.assert_close(out[5, :, 0], k_cache[5, :, :3].amax(dim=1))
    torch.testing.assert_close(out[3, :, 0], k_cache[3, :, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_fused_append_and_centroids_matches_reference(dtype, phase):
    loc = torch.tensor(LOCS[phase], device=DEVICE)
    k, v = _tokens(len(loc), seed=2)
    got, want = _cache(dtype, seed=3), _cache(dtype, seed=3)
    cent_got = torch.zeros(10, 2, 1, 64, dtype=dtype, device=DEVICE)
    cent_want = cent_got.clone()
    append_kv_and_centroids(k, v, *got, cent_got, loc)
    append_kv_and_centroids_ref(k, v, *want, cent_want, loc)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(cent_got.float(), cent_want.float(), atol=tol, rtol=tol)


def test_bad_inputs_raise_clear_errors():
    k_cache, v_cache = _cache(torch.float32)
    k, v = _tokens(3)
    loc = torch.tensor([0, 1, 2], device=DEVICE)
    with pytest.raises(ValueError, match="k must be"):
        write_kv(k[:, :1], v, k_cache, v_cache, loc)
    with pytest.raises(ValueError, match="loc must have shape"):
        write_kv(k, v, k_cache, v_cache, loc[:2])
    with pytest.raises(ValueError, match="loc must be int32 or int64"):
        write_kv(k, v, k_cache, v_cache, loc.float())
    with pytest.raises(ValueError, match="pool='median'"):
        pool_pages(k_cache, torch.zeros(10, 2, 1, 64, device=DEVICE), loc, pool="median")
    with pytest.raises(ValueError, match="out must be"):
        pool_pages(k_cache, torch.zeros(10, 2, 64, device=DEVICE), loc)

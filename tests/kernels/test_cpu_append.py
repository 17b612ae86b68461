"""CPU cache writes against the torch references: bit for bit (same dtype casts, same fp32 sum and division).

A wrong offset, a missed run end (a prefill page averaged over too few keys) or a centroid written to
the wrong page changes bits, so ``torch.equal`` is the check.
"""

import pytest
import torch

from vortex_rl.kernels.append_kv import append_kv_and_centroids_ref
from vortex_rl.kernels.cpu_append import append_kv_and_centroids_cpu, write_kv_cpu
from vortex_rl.kernels.kv_cache import write_kv_ref

PAGE, PAGES, KV, DIM = 16, 12, 3, 32
# Decode: one token per request at page starts, middles and ends. Prefill: runs of tokens over pages,
# one partial (pages 6 and 2), one ending on a page boundary, single tokens between runs.
DECODE = [3 * PAGE + 5, 7 * PAGE + 0, 1 * PAGE + 15, 9 * PAGE + 14]
PREFILL = [6 * PAGE + i for i in range(PAGE)] + [2 * PAGE] + [4 * PAGE + i for i in range(15)] + [8 * PAGE + 3]
LOCS = {"decode": DECODE, "prefill": PREFILL, "one_token": [5 * PAGE + 7]}


def _cache(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (PAGES, KV, PAGE, DIM)
    return [torch.randn(shape, generator=gen).to(dtype) for _ in range(2)]


def _tokens(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, KV, DIM, generator=gen) for _ in range(2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("phase", sorted(LOCS))
@pytest.mark.parametrize("loc_dtype", [torch.int32, torch.int64])
def test_append_matches_reference_bit_for_bit(dtype, phase, loc_dtype):
    loc = torch.tensor(LOCS[phase], dtype=loc_dtype)
    k, v = _tokens(len(loc))
    got, want = _cache(dtype), _cache(dtype)
    cent_got = torch.randn(PAGES, KV, 1, DIM).to(dtype)  # untouched pages must keep their values
    cent_want = cent_got.clone()
    append_kv_and_centroids_cpu(k, v, *got, cent_got, loc)
    append_kv_and_centroids_ref(k, v, *want, cent_want, loc.long())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(cent_got, cent_want)


@pytest.mark.parametrize("phase", sorted(LOCS))
def test_write_kv_matches_reference(phase):
    loc = torch.tensor(LOCS[phase])
    k, v = _tokens(len(loc))
    got, want = _cache(torch.float32), _cache(torch.float32)
    write_kv_cpu(k, v, *got, loc.int())
    write_kv_ref(k, v, *want, loc)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_negative_slots_are_skipped_like_the_triton_kernels():
    loc = torch.tensor([3 * PAGE + 5, -1, 1 * PAGE + 15, -1])
    k, v = _tokens(4)
    got, want = _cache(torch.float32), _cache(torch.float32)
    cent_got, cent_want = torch.zeros(PAGES, KV, 1, DIM), torch.zeros(PAGES, KV, 1, DIM)
    append_kv_and_centroids_cpu(k, v, *got, cent_got, loc)
    kept = loc >= 0
    append_kv_and_centroids_ref(k[kept], v[kept], *want, cent_want, loc[kept])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and torch.equal(cent_got, cent_want)
    write_kv_cpu(k, v, *_cache(torch.float32, seed=5), torch.full((4,), -1))  # nothing to write: no error


def test_bad_inputs_raise_clear_errors():
    k_cache, v_cache = _cache(torch.float32)
    k, v = _tokens(3)
    loc = torch.tensor([0, 1, 2])
    cent = torch.zeros(PAGES, KV, 1, DIM)
    with pytest.raises(ValueError, match="k must be"):
        append_kv_and_centroids_cpu(k[:, :1], v, k_cache, v_cache, cent, loc)
    with pytest.raises(ValueError, match="centroids must be"):
        append_kv_and_centroids_cpu(k, v, k_cache, v_cache, cent[:, :, :, :4], loc)
    with pytest.raises(ValueError, match="loc must be int32 or int64"):
        write_kv_cpu(k, v, k_cache, v_cache, loc.float())
    with pytest.raises(ValueError, match="differ in shape"):
        write_kv_cpu(k, v, k_cache, torch.cat([v_cache, v_cache]), loc)

"""Writing tokens into the paged cache and keeping per-page state (centroids, min/max) current."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.kernels import page_fill_from_loc, pool_pages_ref, write_kv_ref


def _slots(pages, start, count, page_size=16):
    """Slots of tokens start..start+count of a request whose pages are `pages`."""
    return torch.tensor([pages[t // page_size] * page_size + t % page_size for t in range(start, start + count)])


def test_page_fill_from_loc_prefill_and_decode():
    loc = torch.cat([_slots([3, 7], 0, 20), _slots([5], 4, 1), _slots([2, 9], 16, 3)])
    page, fill = page_fill_from_loc(loc, 16)
    expect = {3: 16, 7: 4, 5: 5, 9: 3}
    assert fill.tolist() == [expect[int(p)] for p in page]


@pytest.mark.parametrize("pool", ["mean", "max", "min", "sum"])
def test_pool_pages_matches_loop(pool):
    """Prefill of 2 requests then decode steps: every touched page pooled over its valid tokens only."""
    g = torch.Generator().manual_seed(0)
    kv, d, ps = 2, 8, 16
    k_cache = torch.randn(12, kv, ps, d, generator=g) * 100  # garbage outside written slots
    v_cache = torch.zeros_like(k_cache)
    state = torch.zeros(12, kv, 1, d)
    reqs = {0: ([4, 1, 8], 21), 1: ([6, 11], 16)}
    tokens = {r: torch.randn(40, kv, d, generator=g) for r in reqs}
    loc = torch.cat([_slots(pages, 0, n) for pages, n in reqs.values()])
    k_new = torch.cat([tokens[r][:n] for r, (_, n) in reqs.items()])
    write_kv_ref(k_new, k_new, k_cache, v_cache, loc)
    pool_pages_ref(k_cache, state, loc, pool=pool)
    lengths = {r: n for r, (_, n) in reqs.items()}
    for _ in range(3):  # decode: one token per request
        loc = torch.cat([_slots(reqs[r][0], lengths[r], 1) for r in reqs])
        k_new = torch.stack([tokens[r][lengths[r]] for r in reqs])
        write_kv_ref(k_new, k_new, k_cache, v_cache, loc)
        pool_pages_ref(k_cache, state, loc, pool=pool)
        for r in reqs:
            lengths[r] += 1
    reduce = {"mean": lambda x: x.mean(0), "sum": lambda x: x.sum(0),
              "max": lambda x: x.max(0).values, "min": lambda x: x.min(0).values}[pool]
    for r, (pages, _) in reqs.items():
        for lp in range((lengths[r] + 15) // 16):
            keys = tokens[r][lp * 16 : min((lp + 1) * 16, lengths[r])]
            torch.testing.assert_close(state[pages[lp], :, 0], reduce(keys), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_cache[4, :, 3], tokens[0][3])


def test_pool_pages_rejects_bad_arguments():
    k_cache = torch.zeros(4, 2, 16, 8)
    with pytest.raises(ValueError, match="pool='median'"):
        pool_pages_ref(k_cache, torch.zeros(4, 2, 1, 8), torch.tensor([0]), pool="median")
    with pytest.raises(ValueError, match=r"out must be \[num_pages=4"):
        pool_pages_ref(k_cache, torch.zeros(4, 2, 8), torch.tensor([0]))

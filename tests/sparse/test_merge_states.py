"""Attention-state merge: algebra, and split attention merged equals attention over the whole set."""

from __future__ import annotations

import torch

from tests.sparse.paged_cache import make_paged_batch, naive_attention
from vortex_rl.kernels import sparse_decode_attention_ref
from vortex_rl.sparse import merge_states


def _state(shape=(3, 4), d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, d, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64) * 3


def test_commutative_and_associative():
    a, b, c = _state(seed=1), _state(seed=2), _state(seed=3)
    ab = merge_states(*a, *b)
    ba = merge_states(*b, *a)
    torch.testing.assert_close(ab[0], ba[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(ab[1], ba[1], atol=1e-12, rtol=0)
    left = merge_states(*merge_states(*a, *b), *c)
    right = merge_states(*a, *merge_states(*b, *c))
    torch.testing.assert_close(left[0], right[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(left[1], right[1], atol=1e-6, rtol=1e-6)


def test_empty_set_is_identity():
    o, lse = _state(seed=4)
    empty = (torch.zeros_like(o), torch.full_like(lse, float("-inf")))
    mo, mlse = merge_states(o, lse, *empty)
    torch.testing.assert_close(mo, o, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mlse, lse, atol=1e-6, rtol=1e-6)
    zo, zlse = merge_states(*empty, *empty)
    assert torch.isneginf(zlse).all() and (zo == 0).all()


def test_split_attention_merged_equals_whole():
    """Attention over pages {even} and {odd} merged equals attention over all pages."""
    lengths = [130, 47]
    batch = make_paged_batch(lengths, q_heads=4, kv_heads=2, seed=7)
    n_max = batch.page_table.shape[1]
    ids = torch.arange(n_max, dtype=torch.int32)
    num = (batch.seq_lens + 15) // 16
    ids = torch.where(ids[None, :] < num[:, None], ids[None, :], torch.tensor(-1, dtype=torch.int32))
    ids = ids[:, None, :].expand(2, 2, n_max)
    even = torch.where(ids % 2 == 0, ids, torch.full_like(ids, -1))
    odd = torch.where(ids % 2 == 1, ids, torch.full_like(ids, -1))
    args = (batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens)
    o, lse = merge_states(*sparse_decode_attention_ref(*args, even), *sparse_decode_attention_ref(*args, odd))
    for b in range(2):
        ref_o, ref_lse = naive_attention(batch.q[b], batch.keys[b], batch.values[b])
        torch.testing.assert_close(o[b].double(), ref_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[b].double(), ref_lse, atol=1e-5, rtol=1e-5)


def test_shape_mismatch_is_reported():
    o, lse = _state()
    try:
        merge_states(o, lse, o[:, :2], lse[:, :2])
    except ValueError as err:
        assert "o_b" in str(err) and "(3, 2, 8)" in str(err)
    else:
        raise AssertionError("mismatched shapes were accepted")

"""Attention-state merge: the Triton kernel against the plain-torch reference, the merge's algebra (kernel
and reference), and split attention merged equals attention over the whole set."""

import pytest
import torch

from tests.paged_batch import DEVICE, DTYPES, TOL, naive_attention, random_page_ids, to_physical
from vortex_rl import sparse
from vortex_rl.kernels import merge_states_ref, sparse_decode_attention_ref
from vortex_rl.kernels.merge_states import merge_states

IMPLS = {"triton": merge_states, "torch": merge_states_ref}


def _state(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    o = torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    return o, (torch.randn(*shape[:-1], generator=gen) * 3).to(DEVICE)


def _close(a, b, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a[0].float(), b[0].float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)


def test_sparse_exports_the_reference():
    assert sparse.merge_states is merge_states_ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 64), (5, 80), (2, 3, 2, 128)])
def test_matches_reference(dtype, shape):
    a, b = _state(shape, dtype, 0), _state(shape, dtype, 1)
    _close(merge_states(*a, *b), merge_states_ref(*a, *b), dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_commutative_and_associative(impl):
    merge = IMPLS[impl]
    a, b, c = (_state((4, 6, 64), torch.float32, s) for s in range(3))
    _close(merge(*a, *b), merge(*b, *a), torch.float32)
    left = merge(*merge(*a, *b), *c)
    right = merge(*a, *merge(*b, *c))
    _close(left, right, torch.float32)


def test_reference_keeps_float64():
    """fp64 states merge in fp64: commutative to 1e-12, associative to 1e-6."""
    gen = torch.Generator().manual_seed(1)
    a, b, c = ((torch.randn(3, 4, 8, generator=gen, dtype=torch.float64),
                torch.randn(3, 4, generator=gen, dtype=torch.float64) * 3) for _ in range(3))
    ab, ba = merge_states_ref(*a, *b), merge_states_ref(*b, *a)
    assert ab[0].dtype == ab[1].dtype == torch.float64
    torch.testing.assert_close(ab[0], ba[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(ab[1], ba[1], atol=1e-12, rtol=0)
    left, right = merge_states_ref(*ab, *c), merge_states_ref(*a, *merge_states_ref(*b, *c))
    torch.testing.assert_close(left[0], right[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(left[1], right[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_minus_inf_is_the_empty_set(impl):
    merge = IMPLS[impl]
    a = _state((3, 4, 64), torch.float32, 0)
    empty = (torch.zeros_like(a[0]), torch.full_like(a[1], float("-inf")))
    _close(merge(*a, *empty), a, torch.float32)
    _close(merge(*empty, *a), a, torch.float32)
    o, lse = merge(*empty, *empty)
    assert torch.equal(o, torch.zeros_like(o)) and torch.isneginf(lse).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_merging_disjoint_page_sets_gives_their_union(make_paged_batch, impl):
    """Attention over pages {0, 2} merged with pages {1, 3} equals attention over all four."""
    merge = IMPLS[impl]
    b = make_paged_batch([64, 60], q_heads=4, kv_heads=2, head_dim=64, device=DEVICE)
    ids = random_page_ids(b, budget=4)
    ids[:] = to_physical(b.page_table, torch.arange(4, dtype=torch.int32, device=DEVICE).expand(2, 4))[:, None, :]
    even, odd = ids.clone(), ids.clone()
    even[..., 1::2] = -1
    odd[..., ::2] = -1
    args = (b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens)
    merged = merge(*sparse_decode_attention_ref(*args, even), *sparse_decode_attention_ref(*args, odd))
    _close(merged, sparse_decode_attention_ref(*args, ids), torch.float32)


def test_split_attention_merged_equals_naive_attention(make_paged_batch):
    """Partial last pages (130 and 47 tokens): even pages merged with odd pages equals attention over
    every token, computed head by head in float64 (1e-5)."""
    batch = make_paged_batch([130, 47], q_heads=4, kv_heads=2, seed=7)
    width = batch.page_table.shape[1]
    ids = torch.arange(width, dtype=torch.int32)
    num = torch.tensor(batch.num_pages)
    ids = torch.where(ids[None, :] < num[:, None], ids[None, :], torch.tensor(-1, dtype=torch.int32))
    ids = ids[:, None, :].expand(2, 2, width)
    even = to_physical(batch.page_table, torch.where(ids % 2 == 0, ids, torch.full_like(ids, -1)))
    odd = to_physical(batch.page_table, torch.where(ids % 2 == 1, ids, torch.full_like(ids, -1)))
    args = (batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens)
    o, lse = merge_states_ref(*sparse_decode_attention_ref(*args, even), *sparse_decode_attention_ref(*args, odd))
    for b in range(2):
        ref_o, ref_lse = naive_attention(batch.q[b], batch.keys[b], batch.values[b])
        torch.testing.assert_close(o[b].double(), ref_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[b].double(), ref_lse, atol=1e-5, rtol=1e-5)


def test_out_buffers():
    a, b = _state((2, 3, 64), torch.float32, 0), _state((2, 3, 64), torch.float32, 1)
    out, lse = torch.empty_like(a[0]), torch.empty_like(a[1])
    got = merge_states(*a, *b, out=out, lse_out=lse)
    assert got[0] is out and got[1] is lse
    _close(got, merge_states_ref(*a, *b), torch.float32)
    with pytest.raises(ValueError, match="lse_out must be"):
        merge_states(*a, *b, lse_out=torch.empty(2, 3, dtype=torch.float16, device=DEVICE))


@pytest.mark.parametrize("impl", IMPLS)
def test_mismatched_shapes_are_named(impl):
    a, b = _state((2, 3, 64), torch.float32, 0), _state((2, 3, 64), torch.float32, 1)
    with pytest.raises(ValueError, match=r"shapes do not match: .*o_b \(2, 2, 64\), lse_b \(2, 2\)"):
        IMPLS[impl](a[0], a[1], b[0][:, :2], b[1][:, :2])

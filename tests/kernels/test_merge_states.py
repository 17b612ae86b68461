"""Triton attention-state merge against the plain-torch reference and the merge's algebra."""

import pytest
import torch

from tests.kernels.paged_batch import DEVICE, DTYPES, TOL, make_batch, random_page_ids
from vortex_rl.kernels import merge_states_ref, sparse_decode_attention_ref
from vortex_rl.kernels.merge_states import merge_states


def _state(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    o = torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    return o, (torch.randn(*shape[:-1], generator=gen) * 3).to(DEVICE)


def _close(a, b, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a[0].float(), b[0].float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 64), (5, 80), (2, 3, 2, 128)])
def test_matches_reference(dtype, shape):
    a, b = _state(shape, dtype, 0), _state(shape, dtype, 1)
    _close(merge_states(*a, *b), merge_states_ref(*a, *b), dtype)


def test_commutative_and_associative():
    a, b, c = (_state((4, 6, 64), torch.float32, s) for s in range(3))
    _close(merge_states(*a, *b), merge_states(*b, *a), torch.float32)
    left = merge_states(*merge_states(*a, *b), *c)
    right = merge_states(*a, *merge_states(*b, *c))
    _close(left, right, torch.float32)


def test_minus_inf_is_the_empty_set():
    a = _state((3, 4, 64), torch.float32, 0)
    empty = (torch.zeros_like(a[0]), torch.full_like(a[1], float("-inf")))
    _close(merge_states(*a, *empty), a, torch.float32)
    _close(merge_states(*empty, *a), a, torch.float32)
    o, lse = merge_states(*empty, *empty)
    assert torch.equal(o, torch.zeros_like(o)) and torch.isneginf(lse).all()


def test_merging_disjoint_page_sets_gives_their_union():
    """Attention over pages {0, 2} merged with pages {1, 3} equals attention over all four."""
    b = make_batch([64, 60], q_heads=4, kv_heads=2, head_dim=64)
    ids = random_page_ids(b, budget=4)
    ids[:] = torch.arange(4, dtype=torch.int32, device=DEVICE)
    even, odd = ids.clone(), ids.clone()
    even[..., 1::2] = -1
    odd[..., ::2] = -1
    args = (b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens)
    merged = merge_states(*sparse_decode_attention_ref(*args, even), *sparse_decode_attention_ref(*args, odd))
    _close(merged, sparse_decode_attention_ref(*args, ids), torch.float32)


def test_out_buffers_and_bad_shapes():
    a, b = _state((2, 3, 64), torch.float32, 0), _state((2, 3, 64), torch.float32, 1)
    out, lse = torch.empty_like(a[0]), torch.empty_like(a[1])
    got = merge_states(*a, *b, out=out, lse_out=lse)
    assert got[0] is out and got[1] is lse
    _close(got, merge_states_ref(*a, *b), torch.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        merge_states(a[0], a[1], b[0][:, :2], b[1][:, :2])
    with pytest.raises(ValueError, match="lse_out must be"):
        merge_states(*a, *b, lse_out=torch.empty(2, 3, dtype=torch.float16, device=DEVICE))

"""``list_lens``: the leading entries of each request's page list that may hold a page. Entries after it
are not read (so a list sized for a larger budget costs nothing), on every backend, and a list with room
for a larger budget gives bit-identical output to one sized for the budget (same blocks, same splits)."""

import pytest
import torch

from tests.paged_batch import DEVICE, assert_attention_close, random_page_ids
from vortex_rl.kernels import sparse_decode_attention_ref
from vortex_rl.kernels.cpu_decode import sparse_decode_attention_cpu
from vortex_rl.kernels.paged_decode import sparse_decode_attention

LENS = [70, 3, 129, 16, 200]
IMPLS = {"triton": sparse_decode_attention, "cpu": sparse_decode_attention_cpu, "torch": sparse_decode_attention_ref}


def _args(b):
    return b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens


def valid_first(ids: torch.Tensor) -> torch.Tensor:
    """The same page sets with the listed pages first and ``-1`` after (the indexers' layout)."""
    order = torch.sort((ids < 0).to(torch.int8), dim=-1, stable=True).indices
    return torch.gather(ids, -1, order)


@pytest.mark.parametrize("impl", IMPLS)
def test_entries_past_list_lens_are_not_read(make_paged_batch, impl):
    device = DEVICE if impl == "triton" else torch.device("cpu")
    b = make_paged_batch(LENS, q_heads=4, kv_heads=2, head_dim=64, seed=4, device=device)
    ids = random_page_ids(b, budget=12, seed=3)
    list_lens = torch.tensor([5, 0, 12, 7, 3], dtype=torch.int32, device=device)
    # after each request's list_len, real pages of that request: read, they would change the output
    poisoned = torch.where(torch.arange(12, device=device)[None, None, :] < list_lens[:, None, None].long(), ids,
                           b.page_table[:, :1, None].expand_as(ids).to(ids.dtype))
    want_ids = torch.where(torch.arange(12, device=device)[None, None, :] < list_lens[:, None, None].long(), ids,
                           torch.full_like(ids, -1))
    got = IMPLS[impl](*_args(b), poisoned, list_lens=list_lens)
    assert_attention_close(got, sparse_decode_attention_ref(*_args(b), want_ids), torch.float32)
    o, lse = got
    assert torch.equal(o[1], torch.zeros_like(o[1])) and torch.isneginf(lse[1]).all()  # list_len 0: nothing


@pytest.mark.parametrize("impl", ["triton", "cpu"])
@pytest.mark.parametrize("num_splits", [4, 16])
def test_room_for_a_larger_budget_changes_no_bit(make_paged_batch, impl, num_splits):
    """Budget 33 in a list of 133: without list_lens the Triton kernel cuts 34 blocks into splits where
    the tight list has 9 (up to 1.2e-7 apart in the interpreter), and the CPU kernel sums over more keys."""
    device = DEVICE if impl == "triton" else torch.device("cpu")
    lens = [700, 300, 1290, 160, 2000]
    b = make_paged_batch(lens, q_heads=4, kv_heads=2, head_dim=64, seed=0, device=device)
    tight = valid_first(random_page_ids(b, budget=33, seed=0))
    roomy = torch.cat([tight, torch.full((*tight.shape[:2], 100), -1, dtype=tight.dtype, device=device)], dim=-1)
    budgets = torch.full((len(lens),), 33, dtype=torch.int32, device=device)
    kwargs = {"num_splits": num_splits} if impl == "triton" else {}
    want = IMPLS[impl](*_args(b), tight, **kwargs)
    got = IMPLS[impl](*_args(b), roomy, list_lens=budgets, **kwargs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_bad_list_lens_are_refused(make_paged_batch):
    b = make_paged_batch([20, 9], q_heads=2, kv_heads=1, head_dim=64)
    ids = random_page_ids(b, budget=2)
    with pytest.raises(ValueError, match=r"list_lens must be \[batch=2\] int32 or int64, got \(3,\)"):
        sparse_decode_attention_ref(*_args(b), ids, list_lens=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="int32 or int64, got .* torch.float32"):
        sparse_decode_attention_cpu(*_args(b), ids, list_lens=torch.zeros(2))

"""Triton paged decode attention (sparse and dense, split-KV) against the plain-torch references."""

import pytest
import torch

from tests.paged_batch import DEVICE, DTYPES, assert_attention_close, random_page_ids
from vortex_rl.kernels import dense_decode_attention_ref, sparse_decode_attention_ref
from vortex_rl.kernels.paged_decode import all_pages
from vortex_rl.kernels.paged_decode import DecodeLaunch, default_decode_launch, dense_decode_attention, sparse_decode_attention


def _args(b):
    return b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group,head_dim", [(1, 64), (2, 128), (4, 64)])
def test_sparse_matches_reference(make_paged_batch, dtype, group, head_dim):
    b = make_paged_batch([1, 15, 17, 33], q_heads=2 * group, kv_heads=2, head_dim=head_dim, dtype=dtype, device=DEVICE)
    ids = random_page_ids(b, budget=4, seed=group)
    got = sparse_decode_attention(*_args(b), ids)
    assert_attention_close(got, sparse_decode_attention_ref(*_args(b), ids), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq_lens", [[1], [15], [17, 40, 64], [33, 1, 70]])
def test_dense_matches_reference(make_paged_batch, dtype, seq_lens):
    b = make_paged_batch(seq_lens, q_heads=4, kv_heads=2, head_dim=64, dtype=dtype, seed=len(seq_lens), device=DEVICE)
    assert_attention_close(dense_decode_attention(*_args(b)), dense_decode_attention_ref(*_args(b)), dtype)


def test_sparse_every_page_equals_dense(make_paged_batch):
    """A shuffled list of all pages with -1 between them attends to exactly the dense token set."""
    b = make_paged_batch([17, 50, 5], q_heads=4, kv_heads=2, head_dim=64, device=DEVICE)
    ids = all_pages(b.page_table, b.seq_lens, 2, 16)
    ids = torch.cat([ids, torch.full_like(ids, -1)], dim=-1)
    gen = torch.Generator().manual_seed(0)
    ids = ids[..., torch.randperm(ids.shape[-1], generator=gen).to(ids.device)]
    dense = dense_decode_attention(*_args(b))
    assert_attention_close(sparse_decode_attention(*_args(b), ids), dense, torch.float32)


@pytest.mark.parametrize("num_splits", [2, 3, 64])
def test_split_equals_no_split(make_paged_batch, num_splits):
    b = make_paged_batch([70, 3, 129], q_heads=4, kv_heads=2, head_dim=64, seed=3, device=DEVICE)
    ids = random_page_ids(b, budget=9, seed=1)
    one = sparse_decode_attention(*_args(b), ids, num_splits=1)
    assert_attention_close(sparse_decode_attention(*_args(b), ids, num_splits=num_splits), one, torch.float32)
    one = dense_decode_attention(*_args(b), num_splits=1)
    assert_attention_close(dense_decode_attention(*_args(b), num_splits=num_splits), one, torch.float32)


def test_empty_page_list_gives_zero_and_minus_inf(make_paged_batch):
    b = make_paged_batch([20, 9], q_heads=2, kv_heads=1, head_dim=64, device=DEVICE)
    ids = torch.full((2, 1, 3), -1, dtype=torch.int32, device=b.q.device)
    ids[1, 0, 1] = b.page_table[1, 0]
    o, lse = sparse_decode_attention(*_args(b), ids, num_splits=2)
    assert torch.equal(o[0], torch.zeros_like(o[0])) and torch.isneginf(lse[0]).all()
    assert_attention_close((o, lse), sparse_decode_attention_ref(*_args(b), ids), torch.float32)


def test_out_buffers_and_scale_are_used(make_paged_batch):
    b = make_paged_batch([18, 40], q_heads=4, kv_heads=2, head_dim=64, seed=5, device=DEVICE)
    out, lse = torch.empty_like(b.q), torch.empty(2, 4, device=b.q.device)
    got = dense_decode_attention(*_args(b), sm_scale=0.3, out=out, lse=lse, num_splits=2)
    assert got[0] is out and got[1] is lse
    assert_attention_close(got, dense_decode_attention_ref(*_args(b), sm_scale=0.3), torch.float32)


def test_int64_strided_metadata_and_page_size_8(make_paged_batch):
    b = make_paged_batch([9, 30], q_heads=2, kv_heads=1, head_dim=64, page_size=8, seed=2, device=DEVICE)
    strided_table = b.page_table.long().t().contiguous().t()  # column-major: stride(1) != 1
    args = (b.q, b.k_cache, b.v_cache, strided_table, b.seq_lens.long())
    assert_attention_close(dense_decode_attention(*args), dense_decode_attention_ref(*_args(b)), torch.float32)


def test_bad_inputs_raise_clear_errors(make_paged_batch):
    b = make_paged_batch([5], q_heads=4, kv_heads=2, head_dim=64, device=DEVICE)
    ids = random_page_ids(b, budget=2)
    with pytest.raises(ValueError, match="q_heads"):
        sparse_decode_attention(b.q[:, :3], b.k_cache, b.v_cache, b.page_table, b.seq_lens, ids)
    with pytest.raises(ValueError, match="pages must be"):
        sparse_decode_attention(*_args(b), ids[:, :1])
    with pytest.raises(ValueError, match="share a dtype"):
        dense_decode_attention(b.q.half(), b.k_cache, b.v_cache, b.page_table, b.seq_lens)
    with pytest.raises(ValueError, match="out must be"):
        dense_decode_attention(*_args(b), out=torch.empty(1, 4, 32, device=b.q.device))
    with pytest.raises(ValueError, match="num_splits"):
        dense_decode_attention(*_args(b), num_splits=0)


@pytest.mark.parametrize("num_splits", [4, 16])
def test_splits_sized_from_lengths_in_a_wide_table(make_paged_batch, num_splits):
    """A page table much wider than most requests (as under CUDA graphs): each request spreads its own
    blocks over the grid's splits; the unused splits are empty states the merge ignores."""
    b = make_paged_batch([1, 17, 300, 40], q_heads=4, kv_heads=2, head_dim=32, seed=9, device=DEVICE)
    wide = torch.full((4, 64), -1, dtype=torch.int32, device=b.page_table.device)
    wide[:, : b.page_table.shape[1]] = b.page_table
    args = (b.q, b.k_cache, b.v_cache, wide, b.seq_lens)
    assert_attention_close(dense_decode_attention(*args, num_splits=num_splits), dense_decode_attention_ref(*args),
                           torch.float32)
    ids = random_page_ids(b, budget=12, seed=2)
    assert_attention_close(sparse_decode_attention(*args, ids, num_splits=num_splits),
                           sparse_decode_attention_ref(*args, ids), torch.float32)


@pytest.mark.parametrize("config", [DecodeLaunch(1, 2), DecodeLaunch(2, 1, num_warps=8), DecodeLaunch(8, 4, 2)])
def test_launch_configs_match_the_references(make_paged_batch, config):
    """What ``scripts/sweep_kernels.py`` times on a GPU: other tiles (pages per block), pipeline depths and
    warp counts compute the same attention, split or not (the interpreter runs the tile; stages and warps
    only reach the compiler)."""
    b = make_paged_batch([1, 16, 17, 70, 129], q_heads=4, kv_heads=2, head_dim=32, seed=4, device=DEVICE)
    ids = random_page_ids(b, budget=7, seed=3)
    for num_splits in (1, 3):
        assert_attention_close(sparse_decode_attention(*_args(b), ids, num_splits=num_splits, config=config),
                               sparse_decode_attention_ref(*_args(b), ids), torch.float32)
        assert_attention_close(dense_decode_attention(*_args(b), num_splits=num_splits, config=config),
                               dense_decode_attention_ref(*_args(b)), torch.float32)


def test_default_launch_and_bad_configs():
    assert default_decode_launch(16, 128, 2) == DecodeLaunch(pages_per_block=4, num_stages=3, num_warps=4)
    assert default_decode_launch(16, 16, 2).pages_per_block == 8  # 16-bit head_dim 16: capped at 128 tokens
    for bad, match in [(dict(pages_per_block=3, num_stages=2), "pages_per_block=3"),
                       (dict(pages_per_block=2, num_stages=0), "num_stages=0"),
                       (dict(pages_per_block=2, num_stages=2, num_warps=3), "num_warps=3")]:
        with pytest.raises(ValueError, match=match):
            DecodeLaunch(**bad)


def test_a_block_under_16_tokens_is_refused(make_paged_batch):
    b = make_paged_batch([9, 30], q_heads=2, kv_heads=1, head_dim=64, page_size=8, seed=2, device=DEVICE)
    with pytest.raises(ValueError, match="at least 16"):
        dense_decode_attention(*_args(b), config=DecodeLaunch(1, 2))
    with pytest.raises(TypeError, match="DecodeLaunch"):
        dense_decode_attention(*_args(b), config=(1, 2))

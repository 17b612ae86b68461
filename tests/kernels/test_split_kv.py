"""How many programs share a row: the wave model of ``split_count_for``, on hand-computed cases."""

import pytest
import torch

from vortex_rl.kernels.split_kv import split_count_for

H100 = 132  # SMs; 2 programs per SM make a wave of 264


@pytest.mark.parametrize("programs,num_blocks,min_blocks,max_splits,want", [
    # batch 1 x 8 KV heads: 8 programs fill 3% of a wave; split as far as allowed
    (8, 64, 2, 16, 16),
    # only 5 blocks of 2 each: 2 splits at most
    (8, 5, 2, 16, 2),
    (8, 1, 1, 16, 1),
    # 256 programs (batch 32 x 8): one wave; 2 splits make 2 waves of half rows, no gain
    (256, 64, 2, 16, 1),
    # 150 programs: 1 wave at 57%; s=2 -> ceil(300/264)/2 = 1.0, s=4 -> 3/4, s=8 -> 5/8, s=16 -> 10/16;
    # best 0.625 -> 8 is the fewest within 10%
    (150, 64, 2, 16, 8),
    # 300 programs: 2 waves, the second at 14%; s=2 -> 3/2, s=4 -> 5/4, s=8 -> 10/8, s=16 -> 19/16 = 1.1875;
    # 1.25 <= 1.1875 * 1.1 -> 4
    (300, 64, 2, 16, 4),
    # 528 programs: exactly 2 waves
    (528, 64, 2, 16, 1),
])
def test_split_count_follows_the_wave_model(programs, num_blocks, min_blocks, max_splits, want):
    assert split_count_for(programs, num_blocks, H100, min_blocks=min_blocks, max_splits=max_splits) == want


@pytest.mark.parametrize("num_splits", [1, 2, 3, 4, 16])
def test_request_splits_is_the_rule_the_kernel_applies(make_paged_batch, monkeypatch, num_splits):
    """The host copy of the kernel's per-request split sizing (what the benchmarks report) against the
    kernel itself (Triton interpreter): the splits that wrote a state (finite lse) per request.
    Lengths of 1 to 9 blocks of 1 page: 1 block uses 1 split, 5 blocks in 3 run as 2 + 2 + 1."""
    from vortex_rl.kernels import paged_decode
    from vortex_rl.kernels.split_kv import grid_splits, request_splits

    seq_lens = [5, 16 * 2, 16 * 5, 16 * 7 + 3, 16 * 9]
    b = make_paged_batch(seq_lens, q_heads=2, kv_heads=1, head_dim=16)
    parts = []
    real_finish = paged_decode.finish_splits
    monkeypatch.setattr(paged_decode, "finish_splits", lambda out, lse, o, lp: parts.append(lp.clone())
                        or real_finish(out, lse, o, lp))
    launch = paged_decode.DecodeLaunch(pages_per_block=1, num_stages=1, num_warps=1)
    paged_decode.dense_decode_attention(b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens, num_splits=num_splits,
                                        config=launch)
    grid = grid_splits(num_splits, b.page_table.shape[1])
    want = [request_splits(grid, -(-n // 16)) for n in seq_lens]
    if grid == 1:  # no partial states: the kernel wrote the outputs directly
        assert not parts and want == [1] * len(seq_lens)
        return
    (lse_part,) = parts  # [batch, q_heads, grid]
    assert lse_part.shape[-1] == grid
    assert torch.isfinite(lse_part[:, 0]).sum(dim=-1).tolist() == want

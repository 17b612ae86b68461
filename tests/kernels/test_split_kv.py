"""How many programs share a row: the wave model of ``split_count_for``, on hand-computed cases."""

import pytest

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

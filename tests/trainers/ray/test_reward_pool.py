"""Reward workers as Ray actors give the scores of the in-process reward, in order, with counters merged."""

from __future__ import annotations

import pytest

from vortex_rl.data.math_reward import math_verify_reward
from vortex_rl.data.reward_pool import RewardResult
from vortex_rl.trainers.ray.reward_pool import merge_results

RESPONSES = ["so \\boxed{12}", "\\boxed{7}", "no answer", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{3}", "x"]
TRUTHS = ["12", "8", "1", "1/2", "1/2", "3", "4"]


def test_merge_keeps_order_and_sums_counters():
    merged = merge_results([RewardResult([1.0, 0.0], num_timeouts=1, errors=["t"]),
                            RewardResult([0.5], num_errors=2, errors=["e1", "e2"])])
    assert merged.scores == [1.0, 0.0, 0.5]
    assert (merged.num_timeouts, merged.num_errors, merged.errors) == (1, 2, ["t", "e1", "e2"])


def test_ray_reward_workers_match_the_reward_function(ray_session):
    from vortex_rl.trainers.ray.reward_pool import RayRewardPool

    pool = RayRewardPool("math", num_workers=2, timeout_s=5.0, num_cpus=0.5)
    try:
        result = pool.score(RESPONSES, TRUTHS)
    finally:
        pool.close()
    assert result.scores == [math_verify_reward(r, t) for r, t in zip(RESPONSES, TRUTHS)]
    assert sum(result.scores) >= 3  # 12, 1/2 and 3 at least are right
    assert (result.num_timeouts, result.num_errors) == (0, 0)
    with pytest.raises(ValueError, match="reward.num_workers=0"):
        RayRewardPool("math", num_workers=0, timeout_s=1.0)
    with pytest.raises(RuntimeError, match="reward.fn='no_such_reward'"):
        RayRewardPool("no_such_reward", num_workers=1, timeout_s=1.0, num_cpus=0.5)

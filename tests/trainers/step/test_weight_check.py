"""The one weight-sync check (both orchestrators): each engine's checksum against what it was sent."""

import pytest

from vortex_rl.trainers.step.weight_check import compare_checksums


def test_worst_relative_difference_within_tolerance():
    # relative to max(|sent|, 1): 1e-7 of 10 and 0.5e-6 of 1 (the floor of the denominator)
    assert compare_checksums([10.0, 0.5], [10.0 + 1e-6, 0.5 + 0.5e-6]) == pytest.approx(0.5e-6)
    assert compare_checksums([], []) == 0.0


def test_mismatch_names_the_worker():
    with pytest.raises(RuntimeError, match=r"rollout worker 1 holds weights with checksum 2\.5 but was sent 2\.0"):
        compare_checksums([1.0, 2.0], [1.0, 2.5])
    with pytest.raises(RuntimeError, match="rollout worker 0"):
        compare_checksums([1e6], [1e6 * (1 + 2e-6)], rel_tol=1e-6)
    with pytest.raises(ValueError, match="2 checksums sent but 1 held"):
        compare_checksums([1.0, 2.0], [1.0])

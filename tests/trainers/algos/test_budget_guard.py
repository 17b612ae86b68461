"""The budget guard's decision, step by step against hand-worked sequences."""

import pytest

from vortex_rl.trainers.algos.budget_guard import GuardState, dense_pages, guard_bins, guard_update

KW = dict(min_alpha_p5=0.9, hysteresis=0.02, patience=2)


def step(state, p5, floors=(4, 4), ceilings=(8, 32)):
    return guard_update(state, p5, floors=list(floors), ceilings=list(ceilings), **KW)


def test_bins_and_dense_pages():
    assert guard_bins(600, 256) == [(0, 256), (256, 512), (512, 768)]
    assert guard_bins(512, 256) == [(0, 256), (256, 512)]
    assert dense_pages(256, 16) == 16 and dense_pages(257, 16) == 17
    with pytest.raises(ValueError, match="bin_tokens=0"):
        guard_bins(10, 0)


def test_raise_doubles_up_to_dense_and_remembers_the_failure():
    s = GuardState([4, 4])
    s = step(s, [0.5, 0.5])
    assert s.budgets == [8, 8] and s.failed_at == [4, 4]
    s = step(s, [0.5, 0.5])
    assert s.budgets == [8, 16]  # bin 0 is at its ceiling (dense): it stays
    s = step(s, [None, 0.85])    # no tokens in bin 0: untouched
    assert s.budgets == [8, 32] and s.failed_at == [8, 16]


def test_lower_after_patience_healthy_steps_but_not_to_a_failed_budget():
    s = GuardState([16, 16], failed_at=[0, 4])
    s = step(s, [0.95, 0.95], ceilings=(32, 32))
    assert s.budgets == [16, 16] and s.healthy == [1, 1]    # patience 2: not yet
    s = step(s, [0.95, 0.95], ceilings=(32, 32))
    assert s.budgets == [8, 8] and s.healthy == [0, 0]      # halved
    s = step(s, [0.95, 0.95], ceilings=(32, 32))
    s = step(s, [0.95, 0.95], ceilings=(32, 32))
    assert s.budgets == [4, 8]  # bin 0 reaches its floor 4; bin 1 would return to 4, which failed before


def test_hysteresis_band_keeps_the_budget_and_resets_the_streak():
    s = GuardState([8, 8], healthy=[1, 1])
    s = step(s, [0.91, 0.905])  # above the floor, below floor + hysteresis
    assert s.budgets == [8, 8] and s.healthy == [0, 0]


def test_pure_and_checked():
    s = GuardState([4, 4])
    step(s, [0.1, 0.1])
    assert s.budgets == [4, 4]  # the input state is not changed
    with pytest.raises(ValueError, match="2 bins but 1 alpha values"):
        step(s, [0.1])
    with pytest.raises(ValueError, match="one of each per bin"):
        GuardState([4, 4], healthy=[0])
    assert GuardState(**s.state_dict()) == s

"""`rollout.sparse_guard.signal`: the floor applies to the lower bound or to the point estimate of the
acceptance rate. Two identical but flat policies (a low lower bound from the top-k cut, estimate 1) make a
guard on the lower bound raise the budget and leave one on the estimate where it was."""

import pytest
import torch

from vortex_rl.sparse import SparseConfig
from vortex_rl.trainers.batch import build_batch
from vortex_rl.trainers.config.rollout import SparseGuardConfig
from vortex_rl.trainers.step.budget_guard import BudgetGuard

SPARSE = SparseConfig(page_size=2, budget_pages=4, sink_pages=1, local_pages=2)


class Schedules:
    """The worker side of the guard: records each schedule it is sent."""

    def __init__(self):
        self.sent = []

    def set_budget_schedule(self, schedule, budget_pages):
        self.sent.append((schedule, budget_pages))


def flat_batch():
    """Eight samples of an 8-token prompt and 12-token response: lower bound 0.6, estimate 1.0 everywhere."""
    n = 8
    b = build_batch([[1] * 8] * n, [[5] * 12] * n, [[0.0] * 12] * n, [1.0] * n, [i // 2 for i in range(n)],
                    [False] * n, pad_id=0)
    b.alpha, b.alpha_est = torch.full((n, 12), 0.6), torch.ones(n, 12)
    b.alpha_upper = torch.ones(n, 12)
    return b


@pytest.mark.parametrize("signal, raised", [("lower", True), ("estimate", False)])
def test_the_floor_applies_to_the_chosen_signal(signal, raised):
    guard = BudgetGuard(SparseGuardConfig(min_alpha_p5=0.9, signal=signal, bin_tokens=32), SPARSE, max_tokens=20)
    worker = Schedules()
    metrics = guard.observe(flat_batch(), worker)
    assert metrics["rollout/guard_alpha_p5/pos_0-32"] == pytest.approx(0.6 if signal == "lower" else 1.0)
    assert metrics["rollout/budget_pages/pos_0-32"] == 4.0  # what this batch was generated with
    assert bool(worker.sent) == raised
    assert guard.state.budgets == ([8] if raised else [4])


def test_a_missing_signal_and_a_bad_name_are_refused():
    guard = BudgetGuard(SparseGuardConfig(min_alpha_p5=0.9, signal="estimate"), SPARSE, max_tokens=20)
    b = flat_batch()
    b.alpha_est = None
    with pytest.raises(ValueError, match="signal=estimate"):
        guard.observe(b, Schedules())
    with pytest.raises(ValueError, match="signal='upper' is not one of lower, estimate"):
        SparseGuardConfig(min_alpha_p5=0.9, signal="upper")


def test_ceilings_stop_at_the_longest_context():
    """tiny_cpu: 28-token contexts in one 256-token bin are 14 pages of 2 tokens; dense is 14, not 128."""
    guard = BudgetGuard(SparseGuardConfig(min_alpha_p5=0.9), SPARSE, max_tokens=28)
    assert guard.bins == [(0, 256)] and guard.ceilings == [14]
    assert guard.engine_sparse_config().max_budget == 14
    capped = BudgetGuard(SparseGuardConfig(min_alpha_p5=0.9, max_budget_pages=6, bin_tokens=8), SPARSE, max_tokens=28)
    assert capped.ceilings == [4, 6, 6, 6]  # bin 0-8 is dense at 4 pages; the floor is 4 everywhere

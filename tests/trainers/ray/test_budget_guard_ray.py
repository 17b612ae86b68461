"""The budget guard on Ray: two rollout workers take each new schedule between steps, and the run's
budgets and metrics equal the local orchestrator's (``tests/trainers/run/test_budget_guard_e2e.py``)."""

from __future__ import annotations

import pytest

from tests.trainers.ray.test_train import STEPS, assert_engines_in_sync, assert_same_metrics, run
from tests.trainers.ray.helpers import ray_overrides, tiny_overrides

pytest.importorskip("ray")

# alpha_p5 here is about 0.9, far below this floor: the guard raises budgets at once, and a
# rounding-level difference between the two orchestrators cannot flip a decision.
GUARD = {"rollout.sparse_guard.min_alpha_p5": 0.999, "rollout.sparse_guard.bin_tokens": 8}
BUDGET = "rollout/budget_pages/pos_"


def test_guarded_ray_run_matches_local(ray_session, tmp_path):
    local = run(tmp_path / "local", tiny_overrides(**{"trainer.orchestrator": "local", **GUARD}))
    remote = run(tmp_path / "ray", ray_overrides("disaggregated", **GUARD))
    assert_same_metrics(remote, local)
    assert_engines_in_sync(remote)
    budgets = [{k: v for k, v in remote[s].items() if k.startswith(BUDGET)} for s in range(1, STEPS + 1)]
    assert budgets[0] and all(b == {k: v for k, v in local[s].items() if k.startswith(BUDGET)}
                              for s, b in enumerate(budgets, start=1))
    assert budgets[-1] != budgets[0], "the guard must have changed a budget for the test to mean anything"

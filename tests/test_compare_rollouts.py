"""``scripts/compare_rollouts.py``'s summaries of a run's metrics, on a hand-made run."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_rollouts", ROOT / "scripts" / "compare_rollouts.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

VAL = "val-core/synthetic_addition/acc/mean@4"


def _run():
    """8 steps: reward 0.1 * step; validation at steps 0, 2, 4, 6, 8; the guard raises pos_0-64 at step 5."""
    rows = {0: {"step": 0, VAL: 0.2}}
    for s in range(1, 9):
        rows[s] = {"step": s, compare.REWARD: 0.1 * s, compare.ALPHA: 0.5 + 0.05 * s,
                   "rollout/budget_pages/pos_0-64": 4.0 if s < 5 else 8.0}
        if s % 2 == 0:
            rows[s][VAL] = 0.2 + 0.1 * s
    return rows


def test_summarise_by_hand():
    out = compare.summarise(_run(), tail_frac=0.25, default_budget=3.0, val_evals=3)
    assert out["reward_tail"] == pytest.approx((0.7 + 0.8) / 2)  # last 2 of 8 steps
    assert out["reward_first"] == pytest.approx((0.1 + 0.2) / 2)
    assert out["val_acc_start"] == pytest.approx(0.2) and out["val_acc_final"] == pytest.approx(1.0)
    assert out["val_acc_tail"] == pytest.approx((0.6 + 0.8 + 1.0) / 3)  # evaluations at steps 4, 6, 8
    assert out["alpha_p5_tail"] == pytest.approx((0.85 + 0.9) / 2)
    assert out["budget_final"] == 8.0 and out["budget_mean"] == pytest.approx((4 * 4 + 4 * 8) / 8)


def test_a_run_without_guard_reports_its_fixed_budget():
    rows = {s: {k: v for k, v in row.items() if not k.startswith(compare.BUDGET_PREFIX)} for s, row in _run().items()}
    out = compare.summarise(rows, tail_frac=0.25, default_budget=3.0)
    assert out["budget_final"] == 3.0 and out["budget_mean"] == 3.0

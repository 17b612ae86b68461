"""``reward``: scoring responses (the registered reward function and its worker processes)."""

from __future__ import annotations

from dataclasses import dataclass

from vortex_rl.data import REWARDS
from vortex_rl.trainers.config.checks import check


@dataclass
class RewardConfig:
    """Scoring of responses.

    fn: registered reward (``vortex_rl.data.REWARDS``): ``math`` (last ``\\boxed{}`` vs the answer under
        math-verify), ``math_lenient`` (the last number when there is no box) or ``boxed_exact``.
    num_workers: reward worker processes (0 = in the trainer process).
    timeout_s: time limit per answer; a time-out scores 0 and is counted.
    """

    fn: str = "math"
    num_workers: int = 2
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        REWARDS.check_name(self.fn, "reward.fn")  # before any model loads, not at the first score
        check(self.num_workers >= 0, f"reward.num_workers={self.num_workers} must be >= 0")
        check(self.timeout_s > 0, f"reward.timeout_s={self.timeout_s} must be > 0")

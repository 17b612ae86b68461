"""``sft_warmup``: supervised steps on the reference answers before RL."""

from __future__ import annotations

from dataclasses import dataclass

from vortex_rl.trainers.config.checks import check


@dataclass
class SFTWarmupConfig:
    """Supervised warm-up on the reference answers before RL (for tiny models that start at zero reward).

    steps: optimizer steps (0 = off). lr: its learning rate. batch_size: problems per step.
    """

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 32

    def __post_init__(self) -> None:
        check(self.steps >= 0 and self.lr > 0 and self.batch_size >= 1,
              f"sft_warmup: steps={self.steps} must be >= 0, lr={self.lr} > 0, batch_size={self.batch_size} >= 1")

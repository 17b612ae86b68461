"""GRPO training: the RL math (``algos``), one step (``step``), the loop (``loop.train``), and the
learner / rollout-worker pair it drives (``LocalLearner``, ``LocalRolloutWorker``).

Entry point: ``python -m vortex_rl.train recipe=<name> key=value ...``.
"""

from vortex_rl.trainers.config import GRPOConfig

__all__ = ["GRPOConfig"]

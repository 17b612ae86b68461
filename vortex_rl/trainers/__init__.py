"""GRPO training, by layer (each folder imports only the ones before it):

- ``algos``: the RL math as pure tensor functions (estimators, losses, KL, mismatch correction, dynamic sampling);
- ``batch``: ``RolloutBatch``, the data contract between the layers;
- ``config``: one dataclass per config section, composed into ``GRPOConfig``;
- ``step``: one GRPO step against small protocols (``Learner``, ``RolloutWorker``, ``RewardScorer``, ``WeightSync``);
- ``local``: the in-process learner, rollout worker and weight sync; ``distributed``: FSDP2 and the weight
  transport over ``torch.distributed``; ``ray``: the same roles as Ray actors (the only code importing Ray);
- ``run``: assembling a job (``build_run``) and the loop (``run.loop.train``), checkpoints, tracking, plots.

Entry point: ``python -m vortex_rl.train recipe=<name> key=value ...``.
"""

from vortex_rl.trainers.config import GRPOConfig

__all__ = ["GRPOConfig"]

"""One GRPO step written against small protocols (``Learner``, ``RolloutWorker``, ``RewardScorer``,
``WeightSync``): sampling, scoring, advantages, the update, the weight-sync check, and validation. The
same code drives the in-process (``local``) and the Ray (``ray``) runs."""

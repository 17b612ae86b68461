"""A step's advantages: uniform groups counted (and optionally replaced), then the registered estimator."""

from __future__ import annotations

import torch

from vortex_rl.trainers.algos import get_adv_estimator
from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import AlgorithmConfig
from vortex_rl.trainers.dynamic_sampling import count_uniform_groups, polaris_substitution


def select_informative(batch: RolloutBatch, config: AlgorithmConfig, generator: torch.Generator
                       ) -> tuple[RolloutBatch, dict[str, float]]:
    """Count groups whose samples all score the same; with ``dynamic_sampling=polaris`` replace them."""
    counts = count_uniform_groups(batch.scores, batch.group_ids)
    metrics = {
        "batch/uniform_groups": float(counts["uniform"]),
        "batch/uniform_group_frac": counts["uniform"] / counts["groups"],
        "batch/all_max_groups": float(counts["all_max"]),
        "batch/all_min_groups": float(counts["all_min"]),
        "batch/substituted_groups": 0.0,
    }
    if config.dynamic_sampling == "polaris":
        index, group_ids = polaris_substitution(batch.scores, batch.group_ids, generator)
        replaced = len(set(group_ids.tolist()) - set(batch.group_ids.tolist()))  # copies get fresh ids
        batch = batch.select(index)
        batch.group_ids = group_ids
        metrics["batch/substituted_groups"] = float(replaced)
    return batch, metrics


def compute_advantages(batch: RolloutBatch, config: AlgorithmConfig) -> dict[str, float]:
    """Set ``batch.advantages`` with ``config.adv_estimator``; returns ``critic/advantages/*``."""
    estimator = get_adv_estimator(config.adv_estimator)
    batch.advantages = estimator(batch.scores, batch.group_ids, norm_by_std=config.norm_adv_by_std_in_grpo)
    return {
        "critic/advantages/mean": batch.advantages.mean().item(),
        "critic/advantages/max": batch.advantages.max().item(),
        "critic/advantages/min": batch.advantages.min().item(),
    }

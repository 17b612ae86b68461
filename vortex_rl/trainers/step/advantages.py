"""A step's sample weighting: uniform groups counted (and replaced by the registered dynamic-sampling mode),
the rollout/training mismatch correction, then the registered advantage estimator."""

from __future__ import annotations

import torch

from vortex_rl.trainers.algos.core_algos import get_adv_estimator
from vortex_rl.trainers.algos.dynamic_sampling import DYNAMIC_SAMPLING, count_uniform_groups
from vortex_rl.trainers.algos.rollout_correction import ROLLOUT_IS, acceptance_alpha, mismatch_metrics
from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import AlgorithmConfig, RolloutCorrectionConfig


def select_informative(batch: RolloutBatch, config: AlgorithmConfig, generator: torch.Generator
                       ) -> tuple[RolloutBatch, dict[str, float]]:
    """Count groups whose samples all score the same, then apply ``algorithm.dynamic_sampling`` (``polaris``
    replaces them by copies of informative groups)."""
    counts = count_uniform_groups(batch.scores, batch.group_ids)
    metrics = {
        "batch/uniform_groups": float(counts["uniform"]),
        "batch/uniform_group_frac": counts["uniform"] / counts["groups"],
        "batch/all_max_groups": float(counts["all_max"]),
        "batch/all_min_groups": float(counts["all_min"]),
        "batch/substituted_groups": 0.0,
    }
    index, group_ids = DYNAMIC_SAMPLING.get(config.dynamic_sampling)(batch.scores, batch.group_ids, generator)
    replaced = len(set(group_ids.tolist()) - set(batch.group_ids.tolist()))  # copies get fresh ids
    if replaced or not torch.equal(index, torch.arange(len(index))):
        batch = batch.select(index)
        batch.group_ids = group_ids
    metrics["batch/substituted_groups"] = float(replaced)
    return batch, metrics


def apply_rollout_correction(batch: RolloutBatch, config: RolloutCorrectionConfig) -> dict[str, float]:
    """Set ``batch.is_weights`` (with the registered ``rollout_is`` mode; ``null``: none) and return the
    ``rollout_corr/*`` metrics.

    ``batch`` must carry ``old_log_probs``; top-k fields, when present on both sides,
    give the acceptance-rate metrics. ``config`` is ``algorithm.rollout_correction``.
    """
    mask = batch.response_mask
    alpha = topk_mass = None
    if batch.rollout_topk_ids is not None and batch.train_topk_ids is not None:
        alpha = acceptance_alpha(batch.rollout_topk_ids, batch.rollout_topk_log_probs, batch.train_topk_ids,
                                 batch.train_topk_log_probs)
        topk_mass = batch.rollout_topk_log_probs.exp().sum(-1)
    metrics = mismatch_metrics(batch.old_log_probs, batch.rollout_log_probs, mask, alpha=alpha, topk_mass=topk_mass,
                               threshold=config.rollout_is_threshold, bin_tokens=config.position_bin_tokens)
    if config.rollout_is is not None:
        batch.is_weights = ROLLOUT_IS.get(config.rollout_is)(batch.old_log_probs, batch.rollout_log_probs, mask,
                                                             threshold=config.rollout_is_threshold)
    return metrics


def compute_advantages(batch: RolloutBatch, config: AlgorithmConfig) -> dict[str, float]:
    """Set ``batch.advantages`` with ``config.adv_estimator``; returns ``critic/advantages/*``."""
    estimator = get_adv_estimator(config.adv_estimator)
    batch.advantages = estimator(batch.scores, batch.group_ids, norm_by_std=config.norm_adv_by_std_in_grpo)
    return {
        "critic/advantages/mean": batch.advantages.mean().item(),
        "critic/advantages/max": batch.advantages.max().item(),
        "critic/advantages/min": batch.advantages.min().item(),
    }

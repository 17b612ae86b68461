"""A step's sample weighting: the rollout/training mismatch correction and its metrics (on the batch as
generated), uniform groups counted (and replaced or skipped by the registered dynamic-sampling mode), then
the registered advantage estimator."""

from __future__ import annotations

import torch

from vortex_rl.trainers.algos.acceptance import alpha_metrics
from vortex_rl.trainers.algos.core_algos import get_adv_estimator
from vortex_rl.trainers.algos.dynamic_sampling import DYNAMIC_SAMPLING, count_uniform_groups
from vortex_rl.trainers.algos.rollout_correction import batch_mean, correction_metrics, is_weights, rejection_mask
from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import AlgorithmConfig, RolloutCorrectionConfig


def select_informative(batch: RolloutBatch, config: AlgorithmConfig, generator: torch.Generator
                       ) -> tuple[RolloutBatch, bool, dict[str, float]]:
    """Count groups whose samples all score the same, then apply ``algorithm.dynamic_sampling`` (``polaris``
    replaces them by copies of informative groups, or skips the batch).

    Returns ``(batch, skip, metrics)``: with ``skip`` the step must take no optimizer step.
    """
    counts = count_uniform_groups(batch.scores, batch.group_ids)
    selection = DYNAMIC_SAMPLING.get(config.dynamic_sampling)(batch.scores, batch.group_ids, generator)
    metrics = {
        "batch/uniform_groups": float(counts["uniform"]),
        "batch/uniform_group_frac": counts["uniform"] / counts["groups"],
        "batch/all_max_groups": float(counts["all_max"]),
        "batch/all_min_groups": float(counts["all_min"]),
        "batch/substituted_groups": float(selection.replaced),
        "batch/skipped_step": float(selection.skip),
    }
    if not selection.skip and not torch.equal(selection.index, torch.arange(len(selection.index))):
        batch = batch.select(selection.index)
        batch.group_ids = selection.group_ids
    return batch, selection.skip, metrics


def apply_rollout_correction(batch: RolloutBatch, config: RolloutCorrectionConfig) -> dict[str, float]:
    """Set ``batch.is_weights`` (``rollout_is``; ``null``: none) and ``batch.rs_mask`` (``rollout_rs``;
    ``null``: none) and return the ``rollout_corr/*`` metrics.

    ``batch`` must carry ``old_log_probs``; ``alpha`` / ``alpha_upper`` (made with them) give the
    acceptance-rate metrics. Call it before dynamic sampling duplicates groups, so the metrics describe
    the samples as generated. ``config`` is ``algorithm.rollout_correction``.
    """
    mask = batch.response_mask
    old, rollout = batch.old_log_probs, batch.rollout_log_probs
    metrics: dict[str, float] = {}
    if config.rollout_is is not None:
        batch.is_weights = is_weights(old, rollout, mask, mode=config.rollout_is, threshold=config.rollout_is_threshold)
        if config.rollout_is_batch_normalize:
            factor = batch_mean(batch.is_weights, mask, per_sequence=config.rollout_is != "token")
            # A batch whose weights all vanish (every ratio ~e^-20) is left unnormalised, as verl does:
            # dividing by a clamped mean would scale by an arbitrary constant.
            if factor.item() > 1e-8:
                batch.is_weights = batch.is_weights / factor
            else:
                factor = torch.ones_like(factor)
            metrics["rollout_corr/is_batch_norm_factor"] = factor.item()
    if config.rollout_rs is not None:
        batch.rs_mask = rejection_mask(old, rollout, mask, mode=config.rollout_rs, high=config.rollout_rs_threshold,
                                       low=config.rollout_rs_threshold_lower)
    metrics.update(correction_metrics(old, rollout, mask, weights=batch.is_weights, keep=batch.rs_mask,
                                      threshold=config.rollout_is_threshold))
    if batch.alpha is not None:
        topk_mass = batch.rollout_topk_log_probs.exp().sum(-1) if batch.rollout_topk_log_probs is not None else None
        metrics.update(alpha_metrics(batch.alpha, batch.alpha_upper, mask, bin_tokens=config.position_bin_tokens,
                                     topk_mass=topk_mass, alpha_est=batch.alpha_est))
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

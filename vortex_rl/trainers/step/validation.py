"""Validation: ``k`` samples per held-out problem with the sparse engine; mean@k and pass@k per dataset."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from vortex_rl.data.prompts import Prompt
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.step.protocols import RewardScorer, RolloutWorker
from vortex_rl.trainers.step.sampling import sample, val_sampling_params


def mean_and_pass_at_k(correct: torch.Tensor) -> tuple[float, float]:
    """``correct: [num_problems, k]`` bool -> (mean@k: mean accuracy of all samples, pass@k: share of
    problems with at least one correct sample)."""
    if correct.ndim != 2 or correct.numel() == 0:
        raise ValueError(f"correct must be a non-empty [num_problems, k] tensor, got shape {tuple(correct.shape)}")
    correct = correct.bool()
    return correct.float().mean().item(), correct.any(dim=1).float().mean().item()


def validate(worker: RolloutWorker, pool: RewardScorer, prompts: Sequence[Prompt], config: GRPOConfig, *,
             seed: int) -> dict[str, float]:
    """``val-core/<dataset>/acc/mean@k`` and ``pass@k`` (``k = rollout.val_kwargs.n``; a sample is correct
    when its reward is positive), plus ``val-aux/<dataset>/response_length/mean`` and reward counters."""
    k = config.rollout.val_kwargs.n
    worker.wake()
    samples = sample(worker, prompts, val_sampling_params(config, seed=seed), k)
    if config.rollout.free_cache_engine:
        worker.sleep()
    flat = samples.flat()
    result = pool.score([c.text for _, _, c in flat], [p.problem.answer for _, p, _ in flat])
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_source[p.problem.source].append(i)
    scores = torch.tensor(result.scores).view(len(prompts), k)
    lengths = torch.tensor([len(c.token_ids) for _, _, c in flat], dtype=torch.float32).view(len(prompts), k)
    metrics = {"val-aux/reward/timeouts": float(result.num_timeouts), "val-aux/reward/errors": float(result.num_errors)}
    for source, rows in sorted(by_source.items()):
        mean_k, pass_k = mean_and_pass_at_k(scores[rows] > 0)
        metrics[f"val-core/{source}/acc/mean@{k}"] = mean_k
        metrics[f"val-core/{source}/acc/pass@{k}"] = pass_k
        metrics[f"val-aux/{source}/response_length/mean"] = lengths[rows].mean().item()
    return metrics

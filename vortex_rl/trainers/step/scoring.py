"""Scoring a step's samples with the reward pool, and the reward metrics."""

from __future__ import annotations

import logging

from vortex_rl.data.math_reward import last_boxed
from vortex_rl.trainers.step.protocols import RewardScorer
from vortex_rl.trainers.step.sampling import Samples

log = logging.getLogger(__name__)


def score_samples(pool: RewardScorer, samples: Samples) -> tuple[list[float], dict[str, float]]:
    """Scores prompt-major (as ``Samples.flat``), and ``critic/rewards/*`` plus ``reward/*`` counters.

    Time-outs and reward errors score 0 and are counted (``reward/timeouts``, ``reward/errors``); the
    first error messages are logged, so a count comes with its cause.
    """
    flat = samples.flat()
    responses = [c.text for _, _, c in flat]
    result = pool.score(responses, [p.problem.answer for _, p, _ in flat])
    scores = result.scores
    for message in result.errors:
        log.warning("reward: %s", message)
    metrics = {
        "critic/rewards/mean": sum(scores) / len(scores),
        "critic/rewards/max": max(scores),
        "critic/rewards/min": min(scores),
        "reward/timeouts": float(result.num_timeouts),
        "reward/errors": float(result.num_errors),
        "reward/no_boxed_frac": sum(last_boxed(r) is None for r in responses) / len(responses),
    }
    return scores, metrics

"""Shared pieces of the Ray orchestrator tests: a tiny config whose rewards vary without SFT warm-up."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from vortex_rl.data.math_reward import REWARDS

TEST_REWARD = "test_digit_share"


def digit_share(response: str, ground_truth: str) -> float:
    """Share of digits in the response: varies between samples of a random model (GRPO needs that)."""
    return sum(c.isdigit() for c in response) / max(len(response), 1)


@contextlib.contextmanager
def digit_share_reward():
    """``TEST_REWARD`` registered for the duration (scored in the trainer process: reward.num_workers=0)."""
    REWARDS.register(TEST_REWARD)(digit_share)
    try:
        yield TEST_REWARD
    finally:
        REWARDS.unregister(TEST_REWARD)


def tiny_overrides(**extra) -> list[str]:
    """``tiny_cpu`` shrunk to about a second per step: 4 prompts x 4 samples, 8 new tokens, no validation."""
    values = {
        "trainer.logger": "[console]", "sft_warmup.steps": 0, "data.train_batch_size": 4, "rollout.n": 4,
        "actor.ppo_mini_batch_size": 2,
        "data.max_response_length": 8, "reward.fn": TEST_REWARD, "reward.num_workers": 0,
        "data.val_dataset": "null", "trainer.val_before_train": "false",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def ray_overrides(placement: str, **extra) -> list[str]:
    """``tiny_overrides`` on Ray: 2 learner ranks (gloo) and 2 rollout workers at half a CPU each."""
    return tiny_overrides(**{"trainer.orchestrator": "ray", "cluster.placement": placement,
                             "cluster.num_learner_ranks": 2, "cluster.num_rollout_workers": 2,
                             "cluster.num_cpus_per_worker": 0.5, **extra})


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """``metrics.jsonl`` as ``{step: row}``."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row for row in rows}

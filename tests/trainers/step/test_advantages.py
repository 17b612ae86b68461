"""The step's weighting: mismatch metrics on the batch as generated, then Polaris copies (weights travel
with their rows) or a skip."""

import math

import pytest
import torch

from vortex_rl.trainers.batch import build_batch
from vortex_rl.trainers.config import AlgorithmConfig, RolloutCorrectionConfig
from vortex_rl.trainers.step.advantages import apply_rollout_correction, select_informative


def batch(scores):
    """Three groups of two one-token samples; sample i has trainer log-ratio log(1 + i/10) and alpha i/10."""
    n = len(scores)
    b = build_batch([[1]] * n, [[5]] * n, [[0.0]] * n, scores, [i // 2 for i in range(n)], [False] * n, pad_id=0)
    b.old_log_probs = torch.tensor([[math.log(1 + i / 10)] for i in range(n)])
    b.alpha = b.alpha_upper = torch.tensor([[i / 10] for i in range(n)])
    return b


def test_metrics_describe_the_generated_samples_and_weights_travel_with_copies():
    b = batch([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # group 1 uniform; 2 of 3 informative (> 1/3)
    metrics = apply_rollout_correction(b, RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=2.0))
    assert metrics["rollout_corr/alpha_mean"] == pytest.approx(sum(i / 10 for i in range(6)) / 6)
    assert metrics["rollout_corr/is_weight_mean"] == pytest.approx(sum(1 + i / 10 for i in range(6)) / 6)
    out, skip, sel = select_informative(b, AlgorithmConfig(dynamic_sampling="polaris"), torch.Generator().manual_seed(0))
    assert not skip and sel["batch/substituted_groups"] == 1.0 and sel["batch/skipped_step"] == 0.0
    donor_rows = out.alpha[2:4, 0].mul(10).round().long().tolist()  # the uniform group's slots now hold a donor
    assert donor_rows in ([0, 1], [4, 5])
    torch.testing.assert_close(out.is_weights[2:4, 0], torch.tensor([1 + r / 10 for r in donor_rows]))


def test_too_few_informative_groups_skip_the_step():
    b = batch([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # 1 of 3 informative: not more than 1/3
    out, skip, sel = select_informative(b, AlgorithmConfig(dynamic_sampling="polaris"), torch.Generator())
    assert skip and sel["batch/skipped_step"] == 1.0 and out is b

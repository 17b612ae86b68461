"""Importance weights, rejection masks and mismatch diagnostics vs hand-computed values."""

import math

import pytest
import torch

from vortex_rl.trainers.algos.rollout_correction import (
    ROLLOUT_IS, ROLLOUT_RS, batch_mean, correction_metrics, is_weights, rejection_mask,
)

# row 0: token ratios 0.5 and 3 (third position is padding, its log-ratio 5 must not count);
# row 1: three tokens at ratio 2 (sequence ratio 8).
OLD = torch.tensor([[math.log(0.5), math.log(3.0), 5.0], [math.log(2.0)] * 3])
ROLLOUT = torch.zeros(2, 3)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def test_registered_modes_carry_verl_names():
    assert sorted(ROLLOUT_IS.names()) == ["geometric", "sequence", "token"]
    assert sorted(ROLLOUT_RS.names()) == ["geometric", "sequence", "token"]


@pytest.mark.parametrize("mode, expected", [
    ("token", [[0.5, 2.0, 0.0], [2.0, 2.0, 2.0]]),                     # min(ratio, 2) per token
    ("sequence", [[1.5, 1.5, 0.0], [2.0, 2.0, 2.0]]),                  # product 1.5; 8 truncated to 2
    ("geometric", [[math.sqrt(1.5)] * 2 + [0.0], [2.0, 2.0, 2.0]]),    # geometric mean sqrt(0.5 * 3); 2
])
def test_is_weights_hand_computed(mode, expected):
    w = is_weights(OLD, ROLLOUT, MASK, mode=mode, threshold=2.0)
    torch.testing.assert_close(w, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    assert not w.requires_grad


def test_batch_mean_per_token_and_per_sequence():
    token = is_weights(OLD, ROLLOUT, MASK, mode="token", threshold=2.0)
    assert batch_mean(token, MASK, per_sequence=False).item() == pytest.approx((0.5 + 2 + 2 + 2 + 2) / 5)
    seq = is_weights(OLD, ROLLOUT, MASK, mode="sequence", threshold=2.0)
    assert batch_mean(seq, MASK, per_sequence=True).item() == pytest.approx((1.5 + 2.0) / 2)


@pytest.mark.parametrize("mode, expected", [
    ("token", [[1, 0, 0], [1, 1, 1]]),       # 3 > 2 is dropped; 0.5 and 2 lie in [0.4, 2]
    ("sequence", [[1, 1, 0], [0, 0, 0]]),    # 1.5 kept, 8 drops the whole row
    ("geometric", [[1, 1, 0], [1, 1, 1]]),   # 1.22 and 2 kept
])
def test_rejection_mask_hand_computed(mode, expected):
    keep = rejection_mask(OLD, ROLLOUT, MASK, mode=mode, high=2.0, low=0.4)
    assert keep.tolist() == [[float(v) for v in row] for row in expected]


def test_rejection_lower_bound_defaults_to_reciprocal_and_reaches_past_the_safety_bound():
    old = torch.tensor([[math.log(0.45), -30.0, 30.0]])  # 0.45 < 1/2; e^-30 and e^30 beyond the clamp
    assert rejection_mask(old, torch.zeros(1, 3), torch.ones(1, 3), mode="token", high=2.0).tolist() == [[0, 0, 0]]


def test_correction_metrics_hand_computed():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    old, rollout = OLD[:1], ROLLOUT[:1]
    weights = is_weights(old, rollout, mask, mode="token", threshold=2.0)   # [0.5, 2]
    keep = rejection_mask(old, rollout, mask, mode="token", high=2.0, low=0.4)  # [1, 0]
    m = correction_metrics(old, rollout, mask, weights=weights, keep=keep, threshold=2.0)
    assert m["rollout_corr/kl"] == pytest.approx(-math.log(1.5) / 2)             # mean(log p_r - log p_t)
    assert m["rollout_corr/k3_kl"] == pytest.approx(((0.5 - math.log(0.5) - 1) + (3 - math.log(3) - 1)) / 2)
    assert m["rollout_corr/chi2_token"] == pytest.approx((0.25 + 9) / 2 - 1)       # E[rho^2] - 1
    assert m["rollout_corr/chi2_seq"] == pytest.approx(1.5 ** 2 - 1)
    assert m["rollout_corr/is_truncated_frac"] == pytest.approx(0.5)
    assert m["rollout_corr/is_weight_mean"] == pytest.approx(1.25)                 # truncated weights
    assert m["rollout_corr/ess"] == pytest.approx(2.5 ** 2 / (2 * (0.25 + 4)))      # (sum w)^2 / (n sum w^2)
    assert m["rollout_corr/rs_masked_token_frac"] == pytest.approx(0.5)
    assert m["rollout_corr/rs_masked_seq_frac"] == pytest.approx(1.0)
    assert correction_metrics(old, rollout, torch.zeros(1, 3)) == {}


def test_is_weight_mean_is_not_dominated_by_outliers():
    """Three tokens at e^20 among 97 at ratio 1: the raw mean is ~1.5e7, the truncated one stays near 1."""
    old = torch.zeros(1, 100)
    old[0, :3] = 20.0
    weights = is_weights(old, torch.zeros(1, 100), torch.ones(1, 100), threshold=2.0)
    m = correction_metrics(old, torch.zeros(1, 100), torch.ones(1, 100), weights=weights, threshold=2.0)
    assert m["rollout_corr/is_weight_mean"] == pytest.approx((3 * 2 + 97) / 100)
    assert m["rollout_corr/is_truncated_frac"] == pytest.approx(0.03)

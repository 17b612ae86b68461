"""Truncated importance sampling and the rollout/training mismatch metrics vs hand values and loops."""

import math

import numpy as np
import pytest
import torch

from vortex_rl.trainers.algos.rollout_correction import (
    acceptance_alpha, mismatch_metrics, percentile_by_position, truncated_is_weights,
)


def test_truncated_is_weights_hand_computed():
    old = torch.tensor([[math.log(0.5), math.log(3.0), 0.0]])
    rollout = torch.zeros(1, 3)
    w = truncated_is_weights(old, rollout, torch.tensor([[1.0, 1.0, 0.0]]), threshold=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.5, 2.0, 0.0]]))
    assert not w.requires_grad


def alpha_loop(r_ids, r_lp, t_ids, t_lp):
    """sum over the union of both top-k sets of min(p_r, p_t), a missing entry counting as 0."""
    out = torch.zeros(r_ids.shape[:-1])
    for index in np.ndindex(*r_ids.shape[:-1]):
        p_r = {int(i): math.exp(v) for i, v in zip(r_ids[index], r_lp[index]) if i >= 0}
        p_t = {int(i): math.exp(v) for i, v in zip(t_ids[index], t_lp[index]) if i >= 0}
        out[index] = sum(min(p_r.get(v, 0.0), p_t.get(v, 0.0)) for v in set(p_r) | set(p_t))
    return out


@pytest.mark.parametrize("k_r, k_t", [(5, 5), (3, 6), (1, 1)])
def test_alpha_matches_loop(k_r, k_t):
    g = torch.Generator().manual_seed(k_r * 10 + k_t)
    vocab = 8

    def topk(k):
        logits = torch.randn(2, 4, vocab, generator=g)
        values, ids = torch.log_softmax(logits, -1).topk(k, dim=-1)
        ids[0, 1, -1] = -1  # a padded entry
        return ids, values

    r_ids, r_lp = topk(k_r)
    t_ids, t_lp = topk(k_t)
    torch.testing.assert_close(acceptance_alpha(r_ids, r_lp, t_ids, t_lp), alpha_loop(r_ids, r_lp, t_ids, t_lp),
                               atol=1e-6, rtol=1e-6)


def test_alpha_with_full_vocabulary_is_one_minus_total_variation():
    g = torch.Generator().manual_seed(3)
    p, q = torch.softmax(torch.randn(6, generator=g), -1), torch.softmax(torch.randn(6, generator=g), -1)
    ids = torch.arange(6)
    alpha = acceptance_alpha(ids, p.log(), ids.flip(0), q.log().flip(0))
    assert alpha.item() == pytest.approx(1 - 0.5 * (p - q).abs().sum().item(), abs=1e-6)
    assert acceptance_alpha(ids, p.log(), ids, p.log()).item() == pytest.approx(1.0, abs=1e-6)


def test_percentile_by_position_matches_numpy():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(5, 7, generator=g)
    lengths = torch.tensor([7, 2, 5, 4, 6])
    mask = (torch.arange(7) < lengths[:, None]).float()
    got = percentile_by_position(values, mask, bin_tokens=3)
    assert list(got) == [(0, 3), (3, 6), (6, 9)]
    for (start, end), value in got.items():
        chunk = values[:, start:end][mask[:, start:end].bool()].numpy()
        assert value == pytest.approx(np.percentile(chunk, 5), abs=1e-6)


def test_mismatch_metrics_hand_computed():
    old = torch.tensor([[0.0, math.log(2.0), 5.0]])
    rollout = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    alpha = torch.tensor([[1.0, 0.5, 0.0]])
    m = mismatch_metrics(old, rollout, mask, alpha=alpha, threshold=1.5, bin_tokens=2)
    assert m["rollout_corr/kl"] == pytest.approx(-math.log(2) / 2)                 # mean(log p_r - log p_t)
    assert m["rollout_corr/k3_kl"] == pytest.approx((2 - math.log(2) - 1) / 2)      # mean(r - log r - 1)
    assert m["rollout_corr/is_weight_mean"] == pytest.approx(1.5)
    assert m["rollout_corr/is_truncated_frac"] == pytest.approx(0.5)
    assert m["rollout_corr/alpha_mean"] == pytest.approx(0.75)
    assert m["rollout_corr/alpha_p5"] == pytest.approx(np.percentile([1.0, 0.5], 5))
    assert set(m) >= {"rollout_corr/alpha_p5/pos_0-2"} and "rollout_corr/alpha_p5/pos_2-4" not in m
    assert mismatch_metrics(old, rollout, torch.zeros(1, 3)) == {}

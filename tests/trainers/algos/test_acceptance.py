"""Acceptance-rate bounds vs a loop over full distributions; exact quantiles vs numpy at any size."""

import math

import numpy as np
import pytest
import torch

from vortex_rl.trainers.algos.acceptance import (
    acceptance_alpha_bounds, alpha_metrics, exact_quantile, percentile_by_position,
)


def alpha_loop(r_ids, r_lp, t_ids, t_lp):
    """Per position over the shared set S = R ∩ T: lower = sum of min(p_r, p_t); upper = lower +
    min(1 - P_r(S), 1 - P_t(S)); estimate = lower + rho * that slack, rho = lower / min(P_r(S), P_t(S))
    (0 when S is empty)."""
    lower, estimate, upper = (torch.zeros(r_ids.shape[:-1]) for _ in range(3))
    for index in np.ndindex(*r_ids.shape[:-1]):
        p_r = {int(i): math.exp(v) for i, v in zip(r_ids[index], r_lp[index]) if i >= 0}
        p_t = {int(i): math.exp(v) for i, v in zip(t_ids[index], t_lp[index]) if i >= 0}
        shared = set(p_r) & set(p_t)
        lo = sum(min(p_r[v], p_t[v]) for v in shared)
        mass_r, mass_t = sum(p_r[v] for v in shared), sum(p_t[v] for v in shared)
        slack = min(1 - mass_r, 1 - mass_t)
        rho = lo / min(mass_r, mass_t) if shared else 0.0
        lower[index], upper[index], estimate[index] = lo, min(1.0, lo + slack), lo + rho * slack
    return lower, estimate, upper


@pytest.mark.parametrize("k_r, k_t", [(5, 5), (3, 6), (1, 1), (8, 8)])
def test_bounds_match_loop_and_bracket_the_true_alpha(k_r, k_t):
    g = torch.Generator().manual_seed(k_r * 10 + k_t)
    vocab = 8
    p = torch.log_softmax(torch.randn(2, 4, vocab, generator=g), -1)
    q = torch.log_softmax(p + 0.7 * torch.randn(2, 4, vocab, generator=g), -1)
    r_lp, r_ids = p.topk(k_r, dim=-1)
    t_lp, t_ids = q.topk(k_t, dim=-1)
    r_ids[0, 1, -1] = -1  # a padded entry
    r_lp[0, 1, -1] = -math.inf
    lower, _, upper = acceptance_alpha_bounds(r_ids, r_lp, t_ids, t_lp)
    want_lower, _, want_upper = alpha_loop(r_ids, r_lp, t_ids, t_lp)
    torch.testing.assert_close(lower, want_lower, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(upper, want_upper, atol=1e-6, rtol=1e-6)
    true_alpha = torch.minimum(p.exp(), q.exp()).sum(-1)
    assert (lower <= true_alpha + 1e-6).all() and (true_alpha <= upper + 1e-6).all()
    if k_r == k_t == vocab:  # top-k covers everything: both bounds are exact
        torch.testing.assert_close(upper, true_alpha, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("k_r, k_t", [(5, 5), (3, 6), (1, 1), (8, 8)])
def test_estimate_matches_loop_and_lies_between_the_bounds(k_r, k_t):
    g = torch.Generator().manual_seed(k_r * 7 + k_t)
    vocab = 8
    p = torch.log_softmax(torch.randn(3, 5, vocab, generator=g), -1)
    q = torch.log_softmax(p + 0.7 * torch.randn(3, 5, vocab, generator=g), -1)
    (r_lp, r_ids), (t_lp, t_ids) = p.topk(k_r, dim=-1), q.topk(k_t, dim=-1)
    bounds = acceptance_alpha_bounds(r_ids, r_lp, t_ids, t_lp)
    torch.testing.assert_close(bounds.estimate, alpha_loop(r_ids, r_lp, t_ids, t_lp)[1], atol=1e-6, rtol=1e-6)
    assert (bounds.lower <= bounds.estimate + 1e-7).all() and (bounds.estimate <= bounds.upper + 1e-7).all()
    if k_r == k_t == vocab:  # nothing cut: the estimate is the true alpha
        torch.testing.assert_close(bounds.estimate, torch.minimum(p.exp(), q.exp()).sum(-1), atol=1e-6, rtol=1e-6)


def test_identical_flat_policies_estimate_one_while_the_lower_bound_is_the_topk_mass():
    """At a high temperature top-20 of a 1,000-token vocabulary carries little mass: the lower bound of two
    identical policies is that mass, far below any floor, while the estimate stays 1."""
    logp = torch.log_softmax(torch.randn(4, 6, 1000, generator=torch.Generator().manual_seed(0)) / 1.4, -1)
    lp, ids = logp.topk(20, dim=-1)
    bounds = acceptance_alpha_bounds(ids, lp, ids, lp)
    torch.testing.assert_close(bounds.lower, lp.exp().sum(-1), atol=1e-6, rtol=1e-6)
    assert bounds.lower.max() < 0.5
    torch.testing.assert_close(bounds.estimate, torch.ones(4, 6), atol=1e-6, rtol=0)
    empty = acceptance_alpha_bounds(ids[..., :1], lp[..., :1], ids[..., 1:2], lp[..., 1:2])  # no shared id
    assert torch.equal(empty.estimate, torch.zeros(4, 6)) and torch.equal(empty.lower, torch.zeros(4, 6))


@pytest.mark.parametrize("n", [1, 2, 15, 17, 1000])
@pytest.mark.parametrize("q", [0.0, 0.05, 0.5, 1.0])
def test_exact_quantile_matches_numpy(n, q):
    values = torch.rand(n, generator=torch.Generator().manual_seed(n))
    assert exact_quantile(values, q) == pytest.approx(float(np.percentile(values.numpy(), 100 * q)), abs=1e-6)


def test_exact_quantile_beyond_torch_quantile_limit():
    """torch.quantile refuses more than 2^24 elements; a step with 16.8M valid tokens must not crash."""
    values = torch.rand(2 ** 24 + 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):
        torch.quantile(values, 0.05)
    assert exact_quantile(values, 0.05) == pytest.approx(float(np.percentile(values.numpy(), 5)), abs=1e-6)
    with pytest.raises(ValueError, match="empty"):
        exact_quantile(torch.zeros(0), 0.05)


def test_percentile_by_position_matches_numpy_with_and_without_offsets():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(5, 7, generator=g)
    lengths = torch.tensor([7, 2, 5, 4, 6])
    mask = (torch.arange(7) < lengths[:, None]).float()
    got = percentile_by_position(values, mask, bin_tokens=3)
    assert list(got) == [(0, 3), (3, 6), (6, 9)]
    for (start, end), value in got.items():
        chunk = values[:, start:end][mask[:, start:end].bool()].numpy()
        assert value == pytest.approx(np.percentile(chunk, 5), abs=1e-6)
    offsets = torch.tensor([0, 4, 1, 2, 3])  # context positions: prompt length + response index
    got = percentile_by_position(values, mask, bin_tokens=4, offsets=offsets)
    pos = torch.arange(7) + offsets[:, None]
    for (start, end), value in got.items():
        chunk = values[(pos >= start) & (pos < end) & mask.bool()].numpy()
        assert value == pytest.approx(np.percentile(chunk, 5), abs=1e-6)
    assert sum(((pos >= s) & (pos < e) & mask.bool()).sum().item() for s, e in got) == int(mask.sum())


def test_alpha_metrics_hand_computed():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    m = alpha_metrics(torch.tensor([[1.0, 0.5, 0.0]]), torch.tensor([[1.0, 0.9, 0.0]]), mask, bin_tokens=2)
    assert m["rollout_corr/alpha_mean"] == pytest.approx(0.75)
    assert m["rollout_corr/alpha_p5"] == pytest.approx(np.percentile([1.0, 0.5], 5))
    assert m["rollout_corr/alpha_upper_mean"] == pytest.approx(0.95)
    assert m["rollout_corr/alpha_upper_p5"] == pytest.approx(np.percentile([1.0, 0.9], 5))
    assert "rollout_corr/alpha_p5/pos_0-2" in m and "rollout_corr/alpha_p5/pos_2-4" not in m
    assert "rollout_corr/alpha_est_p5" not in m
    m = alpha_metrics(torch.tensor([[1.0, 0.5, 0.0]]), None, mask, bin_tokens=2, alpha_est=torch.tensor([[1.0, 0.7, 0.0]]))
    assert m["rollout_corr/alpha_est_mean"] == pytest.approx(0.85)
    assert m["rollout_corr/alpha_est_p5"] == pytest.approx(np.percentile([1.0, 0.7], 5))
    assert m["rollout_corr/alpha_est_p5/pos_0-2"] == pytest.approx(np.percentile([1.0, 0.7], 5))
    assert alpha_metrics(torch.zeros(1, 3), None, torch.zeros(1, 3), bin_tokens=2) == {}

"""RL math against hand-computed values and loop references (verl's per-group loop for GRPO)."""

import math
from collections import defaultdict

import pytest
import torch

from vortex_rl.trainers.algos.core_algos import (
    agg_loss, entropy_from_logits, get_adv_estimator, get_policy_loss, grpo_advantages, kl_penalty, masked_mean,
)
from vortex_rl.trainers.config import ActorConfig


def grpo_loop(scores, group_ids, norm_by_std=True, eps=1e-6):
    """verl's compute_grpo_outcome_advantage, written as its per-group loop."""
    by_group = defaultdict(list)
    for s, g in zip(scores.tolist(), group_ids.tolist()):
        by_group[g].append(s)
    stats = {}
    for g, values in by_group.items():
        if len(values) == 1:
            stats[g] = (0.0, 1.0)
        else:
            t = torch.tensor(values)
            stats[g] = (t.mean().item(), t.std().item())
    out = []
    for s, g in zip(scores.tolist(), group_ids.tolist()):
        mean, std = stats[g]
        out.append((s - mean) / (std + eps) if norm_by_std else s - mean)
    return torch.tensor(out)


def test_grpo_hand_computed():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    # group 0: mean 0.75, unbiased std 0.5; group 1: all equal -> 0; group 2: singleton -> mean 0, std 1
    expected = torch.tensor([0.25 / 0.5, -0.75 / 0.5, 0.25 / 0.5, 0.25 / 0.5, 0.0, 0.0, 5.0])
    torch.testing.assert_close(grpo_advantages(scores, groups), expected, atol=1e-5, rtol=0)
    centred = torch.tensor([0.25, -0.75, 0.25, 0.25, 0.0, 0.0, 5.0])
    torch.testing.assert_close(grpo_advantages(scores, groups, norm_by_std=False), centred, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_vectorised_matches_loop(seed, norm_by_std):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 9, (64,), generator=g) * 7  # arbitrary, interleaved ids; some singletons
    scores = torch.randint(0, 3, (64,), generator=g).float() * torch.rand(64, generator=g)
    torch.testing.assert_close(grpo_advantages(scores, groups, norm_by_std=norm_by_std),
                               grpo_loop(scores, groups, norm_by_std), atol=1e-5, rtol=1e-5)
    assert get_adv_estimator("grpo") is grpo_advantages


def test_grpo_shape_errors():
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        grpo_advantages(torch.zeros(3), torch.zeros(4, dtype=torch.long))


def _config(**kw):
    return ActorConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, **kw)


RATIOS = torch.tensor([[0.5, 1.0, 1.5, 4.0, 1.5]])
ADV = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]])
# per token: max(-A r, -A clip(r, 0.8, 1.28)), and for A < 0 at most -A * 3 (dual clip)
HAND_LOSSES = [-0.5, -1.0, 1.5, 3.0, -1.28]


def test_vanilla_policy_loss_hand_computed():
    old = torch.zeros(1, 5)
    log_prob = RATIOS.log()
    loss, m = get_policy_loss("vanilla")(log_prob, old, ADV, torch.ones(1, 5), config=_config())
    assert loss.item() == pytest.approx(sum(HAND_LOSSES) / 5, abs=1e-6)
    assert m["pg_clipfrac"].item() == pytest.approx(1 / 5)        # token 4: clipped at 1.28
    assert m["pg_clipfrac_lower"].item() == pytest.approx(1 / 5)  # token 3: dual clip at 3
    assert m["ppo_kl"].item() == pytest.approx(-RATIOS.log().mean().item(), abs=1e-6)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, _ = get_policy_loss("vanilla")(log_prob, old, ADV, mask, config=_config())
    assert loss.item() == pytest.approx(sum(HAND_LOSSES[:4]) / 4, abs=1e-6)
    weights = torch.tensor([[1.0, 0.5, 2.0, 1.0, 1.0]])
    loss, _ = get_policy_loss("vanilla")(log_prob, old, ADV, torch.ones(1, 5), config=_config(), rollout_is_weights=weights)
    assert loss.item() == pytest.approx(sum(l * w for l, w in zip(HAND_LOSSES, weights[0].tolist())) / 5, abs=1e-6)


def test_policy_loss_gradient_is_policy_gradient_at_ratio_one():
    log_prob = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    adv = torch.tensor([[2.0, 2.0, -1.0]])
    loss, _ = get_policy_loss("vanilla")(log_prob, log_prob.detach(), adv, torch.ones(1, 3), config=_config())
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -adv / 3)  # d/dlogp of -A * exp(logp - old) at ratio 1


def test_agg_loss_modes_hand_computed():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert agg_loss(losses, mask, "token-mean").item() == pytest.approx(7 / 3)
    assert agg_loss(losses, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    assert agg_loss(losses, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    with pytest.raises(ValueError, match="loss_agg_mode='sum' is not one of"):
        agg_loss(losses, mask, "sum")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_micro_batch_losses_add_up_to_the_batch_loss(mode):
    g = torch.Generator().manual_seed(0)
    losses = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    total = agg_loss(losses, mask, mode)
    parts = sum(agg_loss(losses[i:i + 2], mask[i:i + 2], mode, num_tokens=mask.sum(), num_seqs=6) for i in (0, 2, 4))
    torch.testing.assert_close(parts, total)


def test_kl_estimators_hand_computed():
    log_prob, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_penalty(log_prob, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(log_prob, ref, "kl").item() == pytest.approx(math.log(2))
    # k3 = r - log r - 1 with r = ref / pi = 0.5
    assert kl_penalty(log_prob, ref, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_penalty(log_prob, ref, "low_var_kl").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([30.0]), "k3").item() == 10.0  # clamped
    assert kl_penalty(torch.zeros(3), torch.zeros(3), "k3").abs().max() == 0


def test_entropy_matches_torch_distributions():
    logits = torch.randn(4, 3, 11, generator=torch.Generator().manual_seed(1)) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected, atol=1e-5, rtol=1e-5)


def test_masked_mean_and_unknown_names():
    assert masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0])).item() == 1.5
    assert masked_mean(torch.tensor([1.0]), torch.tensor([0])).item() == 0.0
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; known: grpo"):
        get_adv_estimator("ppo")
    with pytest.raises(ValueError, match=r"unknown policy loss 'gspo'; known: vanilla"):
        get_policy_loss("gspo")
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k2'; known: k1, k3, kl, low_var_kl"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k2")

"""Our GRPO math held to verl 0.9.1's own functions (``verl.trainer.ppo.core_algos``,
``verl.utils.torch_functional``), on seeded random inputs with padding, all-masked rows, a group of equal
rewards and log-ratios at the +-20 safety bound. The rollout-correction half is in
``test_rollout_corr_vs_verl.py``.

Tolerances: float64 inputs are compared at 1e-6 absolute and relative, float32 at 1e-5 (our advantages,
entropies and rollout-correction tensors are float32 by contract). Where verl defines a quantity
differently on purpose, the test asserts the relation and says why. Three differences these tests found
were fixed to match verl (the default row count of the seq-mean losses, the unclamped ``k3_kl`` metric,
IS batch normalisation of vanishing weights); one is kept on purpose (sequence rejection beyond the
safety bound, ``test_rollout_corr_vs_verl.py``).
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl.trainer.ppo import core_algos as verl_algos  # noqa: E402
from verl.utils import torch_functional as verl_F  # noqa: E402
from verl.workers.config import ActorConfig as VerlActorConfig  # noqa: E402

from vortex_rl.registry import RegistryError  # noqa: E402
from vortex_rl.trainers.algos import core_algos as ours  # noqa: E402
from vortex_rl.trainers.config import ActorConfig  # noqa: E402
from vortex_rl.trainers.config.algorithm import AlgorithmConfig  # noqa: E402
from vortex_rl.trainers.step.advantages import compute_advantages  # noqa: E402

F64 = dict(rtol=1e-6, atol=1e-6)
F32 = dict(rtol=1e-5, atol=1e-5)


def assert_scalar_close(got, expected, tol: dict, what: str) -> None:
    got, expected = float(got), float(expected)
    assert abs(got - expected) <= tol["atol"] + tol["rtol"] * abs(expected), f"{what}: ours {got!r}, verl {expected!r}"


def padded_mask(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """``[batch, length]`` right-padded float mask: row 0 full, row 1 empty (all masked), others random."""
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0], lengths[1] = length, 0
    return (torch.arange(length) < lengths[:, None]).to(torch.float64)


def log_prob_pair(seed: int, batch: int = 10, length: int = 16, dtype=torch.float64):
    """``(log_prob, old_log_prob, mask)``: ratios near 1, a few tokens at log-ratio exactly +-20 and +-25
    (beyond the bound, where both sides clamp the PPO ratio), and the padding."""
    g = torch.Generator().manual_seed(seed)
    mask = padded_mask(g, batch, length)
    old = -3 * torch.rand(batch, length, generator=g, dtype=torch.float64)
    new = old + 0.3 * torch.randn(batch, length, generator=g, dtype=torch.float64)
    new[0, :4] = torch.tensor([-0.5, -20.5, -0.25, -25.25], dtype=torch.float64)
    old[0, :4] = torch.tensor([-20.5, -0.5, -25.25, -0.25], dtype=torch.float64)
    return new.to(dtype), old.to(dtype), mask.to(dtype)


# ------------------------------------------------------------------ GRPO outcome advantages

def grpo_case(seed: int):
    """``(scores [N], group_ids [N])``: 5 groups of 4 (group 0 all 1.0, group 1 all 0.1: no signal), one
    singleton, ids not contiguous."""
    g = torch.Generator().manual_seed(seed)
    group_ids = torch.tensor([7] * 4 + [3] * 4 + [11] * 4 + [0] * 4 + [5] * 4 + [42])
    scores = torch.randn(len(group_ids), generator=g).float()
    scores[:4], scores[4:8] = 1.0, 0.1
    scores[8:12] = torch.randint(0, 2, (4,), generator=g).float()  # binary rewards, as math-verify gives
    order = torch.randperm(len(group_ids), generator=g)  # groups interleaved in the batch
    return scores[order], group_ids[order]


def verl_grpo(fn, scores, group_ids, mask, norm):
    rewards = torch.zeros_like(mask)  # the outcome reward sits on the last response token, as verl puts it
    rewards[torch.arange(len(scores)), (mask.sum(-1).long() - 1).clamp(min=0)] = scores
    advantages, returns = fn(rewards, mask, np.array(group_ids.tolist()), epsilon=1e-6, norm_adv_by_std_in_grpo=norm)
    assert torch.equal(advantages, returns)
    return advantages


@pytest.mark.parametrize("norm", [True, False], ids=["std-norm", "no-std"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("verl_name", ["grpo", "grpo_vectorized"])
def test_grpo_advantages_match_verl(seed, norm, verl_name):
    scores, group_ids = grpo_case(seed)
    lengths = torch.randint(1, 7, (len(scores),), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(6) < lengths[:, None]).float()  # verl broadcasts over the valid tokens only
    expected = verl_grpo(verl_algos.get_adv_estimator_fn(verl_name), scores, group_ids, mask, norm)
    got = ours.get_adv_estimator("grpo")(scores, group_ids, norm_by_std=norm, eps=1e-6)
    torch.testing.assert_close(got[:, None] * mask, expected, **F32)
    # The trainer's path: step/advantages.py -> registry with the config's flag.
    batch = types.SimpleNamespace(scores=scores, group_ids=group_ids, advantages=None)
    compute_advantages(batch, AlgorithmConfig(adv_estimator="grpo", norm_adv_by_std_in_grpo=norm))
    torch.testing.assert_close(batch.advantages[:, None] * mask, expected, **F32)
    uniform = torch.isin(group_ids, torch.tensor([7, 3]))  # the two equal-reward groups: zero advantage
    assert torch.all(got[uniform].abs() < 1e-5), got[uniform]


# ------------------------------------------------------------------ policy loss and its aggregation

AGG_MODES = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]


def configs(mode: str, **global_batch_info):
    clip = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, loss_agg_mode=mode)
    verl_config = VerlActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2, **clip)
    verl_config.global_batch_info.update(global_batch_info)
    return ActorConfig(**clip), verl_config


def policy_case(seed: int, dtype=torch.float64):
    new, old, mask = log_prob_pair(seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 100)
    advantages = torch.randn(mask.shape[0], 1, generator=g, dtype=dtype).expand_as(mask).contiguous()
    weights = (2 * torch.rand(mask.shape, generator=g, dtype=dtype)) * mask
    return new, old, advantages, mask, weights


@pytest.mark.parametrize("use_is", [False, True], ids=["no-is", "is-weights"])
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_policy_loss_matches_verl_with_batch_counts(mode, use_is, dtype):
    """The trainer's path: both sides get the mini-batch's token and row counts (ours ``num_tokens`` /
    ``num_seqs``; verl's ``global_batch_info``, which its v1 trainer sets to ``ppo_mini_batch_size`` rows)."""
    tol = F64 if dtype == torch.float64 else F32
    for seed in (0, 1, 2):
        new, old, adv, mask, weights = policy_case(seed, dtype)
        weights = weights if use_is else None
        num_tokens, num_seqs = mask.sum().item(), float(mask.shape[0])
        config, verl_config = configs(mode, batch_num_tokens=num_tokens, global_batch_size=num_seqs, dp_size=1)
        loss, metrics = ours.get_policy_loss("vanilla")(new, old, adv, mask, config=config, rollout_is_weights=weights,
                                                        num_tokens=num_tokens, num_seqs=num_seqs)
        verl_loss, verl_metrics = verl_algos.get_policy_loss_fn("vanilla")(
            old, new, adv, mask, loss_agg_mode=mode, config=verl_config, rollout_is_weights=weights)
        torch.testing.assert_close(loss, verl_loss, **tol)
        for key in ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"):
            # our metrics are float32 whatever the input dtype (logging values): float32 tolerance
            assert_scalar_close(metrics[key], verl_metrics[f"actor/{key}"], F32, key)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_policy_loss_matches_verl_default_counts_without_empty_rows(mode):
    """Without counts passed and no all-masked row, both normalise by this batch's tokens / rows; the
    deprecated ``compute_policy_loss`` (token and clip arguments) gives the same."""
    new, old, adv, mask, _ = policy_case(3)
    new, old, adv, mask = new[2:], old[2:], adv[2:], mask[2:]  # drop the empty row 1 (and row 0's outliers)
    config, verl_config = configs(mode)
    loss, metrics = ours.vanilla_policy_loss(new, old, adv, mask, config=config)
    verl_loss, _ = verl_algos.compute_policy_loss_vanilla(old, new, adv, mask, loss_agg_mode=mode, config=verl_config)
    torch.testing.assert_close(loss, verl_loss, **F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verl marks it deprecated
        old_api = verl_algos.compute_policy_loss(old, new, adv, mask, cliprange=0.2, cliprange_low=0.2,
                                                 cliprange_high=0.28, clip_ratio_c=3.0, loss_agg_mode=mode)
    torch.testing.assert_close(loss, old_api[0], **F64)
    for key, value in zip(("pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"), old_api[1:]):
        assert_scalar_close(metrics[key], value, F32, key)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_matches_verl(mode):
    g = torch.Generator().manual_seed(5)
    mask = padded_mask(g, 9, 13)[2:]  # no empty row (the next test has one)
    loss_mat = torch.randn(mask.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours.agg_loss(loss_mat, mask, mode), verl_algos.agg_loss(loss_mat, mask, mode), **F64)
    n_tok, n_seq = 50.0, 16.0  # micro-batch of a larger mini-batch
    torch.testing.assert_close(ours.agg_loss(loss_mat, mask, mode, num_tokens=n_tok, num_seqs=n_seq),
                               verl_algos.agg_loss(loss_mat, mask, mode, batch_num_tokens=n_tok,
                                                   global_batch_size=n_seq), **F64)


@pytest.mark.parametrize("mode", ["seq-mean-token-sum", "seq-mean-token-mean"])
def test_agg_loss_default_row_count_with_empty_row_matches_verl(mode):
    g = torch.Generator().manual_seed(6)
    mask = padded_mask(g, 10, 13)  # row 1 empty
    loss_mat = torch.randn(mask.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours.agg_loss(loss_mat, mask, mode), verl_algos.agg_loss(loss_mat, mask, mode), **F64)


def test_agg_modes_verl_has_and_ours_lacks_are_refused():
    """verl 0.9.1 also has ``token-sum`` and ``seq-mean-token-sum-norm``; ours refuses them by name."""
    mask = torch.ones(2, 3)
    for mode in ("token-sum", "seq-mean-token-sum-norm"):
        verl_algos.agg_loss(torch.ones(2, 3), mask, mode)  # exists upstream
        with pytest.raises(ValueError, match=mode):
            ours.agg_loss(torch.ones(2, 3), mask, mode)


# ------------------------------------------------------------------ KL estimators and entropy

@pytest.mark.parametrize("name", ["k1", "kl", "k3", "low_var_kl"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_kl_estimators_match_verl(name, dtype):
    new, ref, _ = log_prob_pair(7, dtype=dtype)  # includes log-ratios of +-20 and +-25 (k3 clamps at 20)
    tol = F64 if dtype == torch.float64 else F32
    torch.testing.assert_close(ours.kl_penalty(new, ref, name), verl_algos.kl_penalty(new, ref, name), **tol)


def test_kl_estimators_verl_has_and_ours_lacks_are_refused():
    """verl's ``k2``/``mse``, ``abs`` and the straight-through ``k1+``/``k3+`` are not registered here:
    ours must refuse them by name rather than fall back to another estimator."""
    assert set(ours.KL_ESTIMATORS.names()) == {"k1", "kl", "k3", "low_var_kl"}
    new, ref, _ = log_prob_pair(8)
    for name in ("k2", "mse", "abs", "k3+"):
        verl_algos.kl_penalty(new, ref, name)  # exists upstream
        with pytest.raises(RegistryError, match="k1"):
            ours.kl_penalty(new, ref, name)


@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["logits", "peaked-logits"])
def test_entropy_from_logits_matches_verl(scale):
    logits = scale * torch.randn(4, 7, 97, generator=torch.Generator().manual_seed(9))
    ent = ours.entropy_from_logits(logits)
    torch.testing.assert_close(ent, verl_F.entropy_from_logits(logits), **F32)
    torch.testing.assert_close(ent.double(), verl_F.entropy_from_logits(logits.double()), **F32)
    flat = logits.reshape(-1, 97)
    torch.testing.assert_close(ent.reshape(-1), verl_F.entropy_from_logits_with_chunking(flat, chunk_size=5), **F32)

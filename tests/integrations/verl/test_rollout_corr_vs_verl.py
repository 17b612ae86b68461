"""Our rollout correction (``vortex_rl/trainers/algos/rollout_correction.py``, driven as the trainer does by
``step/advantages.apply_rollout_correction``) held to verl 0.9.1's ``rollout_corr_helper``.

Name map (``verl/trainer/config/algorithm/rollout_correction.yaml``): ``rollout_is`` token / sequence are
the same names in verl (it has no ``geometric`` IS); ``rollout_rs`` token / sequence / geometric are verl's
``token_k1`` / ``seq_sum_k1`` / ``seq_mean_k1``. verl's k1 statistic is ``-log(p_t / p_r)``, so its
``"L_U"`` bounds apply to ``p_r / p_t``: our ``[low, high]`` on ``p_t / p_r`` is verl's ``"1/high_1/low"``
(a single ``high`` is the same symmetric band on both sides). Inputs are float32 (our contract), compared
at 1e-5 absolute and relative.
"""

from __future__ import annotations

import math
import types

import pytest
import torch

pytest.importorskip("verl")

from verl.trainer.ppo import rollout_corr_helper as verl_rc  # noqa: E402
from verl.utils import torch_functional as verl_F  # noqa: E402

from vortex_rl.trainers.algos.rollout_correction import correction_metrics, is_weights  # noqa: E402
from vortex_rl.trainers.config.algorithm import RolloutCorrectionConfig  # noqa: E402
from vortex_rl.trainers.step.advantages import apply_rollout_correction  # noqa: E402

F32 = dict(rtol=1e-5, atol=1e-5)
RS_NAMES = {"token": "token_k1", "sequence": "seq_sum_k1", "geometric": "seq_mean_k1"}


def close(got, expected, what: str) -> None:
    got, expected = float(got), float(expected)
    assert abs(got - expected) <= F32["atol"] + F32["rtol"] * abs(expected), f"{what}: ours {got!r}, verl {expected!r}"


def log_probs(seed: int, batch: int = 12, length: int = 16):
    """``(old_log_prob, rollout_log_prob, mask)`` float32 ``[batch, length]``: row 0 full, row 1 empty,
    the others right-padded; token log-ratios ~ N(0, 0.4) with two tokens at exactly +20 and -20."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0], lengths[1] = length, 0
    mask = (torch.arange(length) < lengths[:, None]).float()
    old = -3 * torch.rand(batch, length, generator=g)
    rollout = old + 0.4 * torch.randn(batch, length, generator=g)
    old[0, :2], rollout[0, :2] = torch.tensor([-0.5, -20.5]), torch.tensor([-20.5, -0.5])
    return old, rollout, mask


def ours_apply(old, rollout, mask, **config):
    batch = types.SimpleNamespace(response_mask=mask, old_log_probs=old, rollout_log_probs=rollout,
                                  is_weights=None, rs_mask=None, alpha=None)
    metrics = apply_rollout_correction(batch, RolloutCorrectionConfig(**config))
    return batch, metrics


def verl_apply(old, rollout, mask, **kw):
    weights, new_mask, metrics = verl_rc.compute_rollout_correction_and_rejection_mask(old, rollout, mask, **kw)
    metrics = {k.removeprefix("rollout_corr/"): v for k, v in metrics.items()}
    return (None if weights is None else weights.batch["rollout_is_weights"]), new_mask, metrics


def assert_offpolicy_metrics(ours: dict, verl: dict, mask: torch.Tensor) -> None:
    for key in ("kl", "k3_kl", "chi2_token"):
        close(ours[f"rollout_corr/{key}"], verl[key], key)
    # chi2_seq: ours averages (prod rho)^2 over the non-empty rows; verl over all rows, where an empty row
    # contributes exp(0)^2 = 1. On purpose (an empty row is no sample): verl + 1 = (m (ours + 1) + e) / n.
    n, e = mask.shape[0], int((mask.sum(-1) == 0).sum())
    assert e > 0
    close(((n - e) * (ours["rollout_corr/chi2_seq"] + 1) + e) / n - 1, verl["chi2_seq"], "chi2_seq relation")


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "batch-norm"])
@pytest.mark.parametrize("threshold", [1.5, 2.0])
@pytest.mark.parametrize("mode", ["token", "sequence"])
@pytest.mark.parametrize("seed", [0, 1])
def test_is_weights_and_metrics_match_verl(seed, mode, threshold, normalize):
    old, rollout, mask = log_probs(seed)
    batch, ours = ours_apply(old, rollout, mask, rollout_is=mode, rollout_is_threshold=threshold,
                             rollout_is_batch_normalize=normalize)
    weights, new_mask, verl = verl_apply(old, rollout, mask, rollout_is=mode, rollout_is_threshold=threshold,
                                         rollout_is_batch_normalize=normalize)
    torch.testing.assert_close(batch.is_weights, weights, **F32)
    assert torch.equal(new_mask, mask) and batch.rs_mask is None
    raw = is_weights(old, rollout, mask, mode=mode, threshold=threshold)
    assert (raw == threshold).any() and (raw[mask.bool()] < threshold).any()  # truncation is exercised
    factor = ours.get("rollout_corr/is_batch_norm_factor", 1.0)
    if normalize:
        close(factor, verl["rollout_is_batch_norm_factor"], "is_batch_norm_factor")
    # ours reports the mean of the weights as applied (after normalisation), verl before it.
    close(ours["rollout_corr/is_weight_mean"] * factor, verl["rollout_is_mean"], "is_weight_mean")
    close(ours["rollout_corr/ess"], verl["rollout_is_eff_sample_size"], "ess")  # scale-invariant
    # is_truncated_frac is per token in every mode; verl's ratio_fraction_high is per token in token mode
    # and per sequence in sequence mode, so compare with verl's token-mode value.
    token_verl = verl if mode == "token" else verl_apply(old, rollout, mask, rollout_is="token",
                                                         rollout_is_threshold=threshold)[2]
    close(ours["rollout_corr/is_truncated_frac"], token_verl["rollout_is_ratio_fraction_high"], "is_truncated_frac")
    assert_offpolicy_metrics(ours, verl, mask)


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "batch-norm"])
def test_geometric_is_is_verls_seq_mean_k1_statistic_truncated(normalize):
    """verl 0.9.1 has no geometric IS; its geometric rejection statistic ``seq_mean_k1`` is the negative log
    of the geometric-mean ratio, so the weight must be ``min(exp(-seq_mean_k1), threshold)``, normalised
    like verl's sequence mode (mean over non-empty rows of the per-row mean weight)."""
    old, rollout, mask = log_probs(2)
    batch, ours = ours_apply(old, rollout, mask, rollout_is="geometric", rollout_is_threshold=1.2,
                             rollout_is_batch_normalize=normalize)
    seq_mean_k1 = verl_F.masked_mean(-(old - rollout), mask, axis=-1)
    expected = torch.exp((-seq_mean_k1).clamp(-verl_rc.SAFETY_BOUND, verl_rc.SAFETY_BOUND)).clamp(max=1.2)
    expected = expected[:, None] * mask
    assert (expected == 1.2).any() and ((expected < 1.2) & mask.bool()).any()
    if normalize:
        rows = (mask.sum(-1) > 0).float()
        expected = expected / ((verl_F.masked_mean(expected, mask, axis=-1) * rows).sum() / rows.sum())
    torch.testing.assert_close(batch.is_weights, expected, **F32)


@pytest.mark.parametrize("bounds", [(None, 2.0), (0.7, 1.6)], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize("mode", ["token", "sequence", "geometric"])
@pytest.mark.parametrize("seed", [0, 3])
def test_rejection_mask_and_metrics_match_verl(seed, mode, bounds):
    low, high = bounds
    if mode == "sequence":  # the product of up to 16 ratios: a wider band keeps some sequences
        low, high = (None if low is None else low / 4), high * 4
    if mode == "geometric":  # a geometric mean varies less than one ratio: a narrower band rejects some
        low, high = (None if low is None else low ** 0.25), high ** 0.25
    old, rollout, mask = log_probs(seed)
    batch, ours = ours_apply(old, rollout, mask, rollout_is=None, rollout_rs=mode, rollout_rs_threshold=high,
                             rollout_rs_threshold_lower=low)
    spec = high if low is None else f"{1 / high}_{1 / low}"  # see the module docstring
    _, new_mask, verl = verl_apply(old, rollout, mask, rollout_is=None, rollout_rs=RS_NAMES[mode],
                                   rollout_rs_threshold=spec)
    kept = batch.rs_mask * mask
    assert torch.equal(kept, new_mask)
    assert 0 < kept.sum() < mask.sum()  # some tokens rejected, some kept
    close(ours["rollout_corr/rs_masked_token_frac"], verl["rollout_rs_masked_fraction"], "rs_masked_token_frac")
    option_frac = verl[f"rollout_rs_{RS_NAMES[mode]}_seq_masked_fraction"]
    close(ours["rollout_corr/rs_masked_seq_frac"], option_frac, "rs_masked_seq_frac")
    # verl's overall rollout_rs_seq_masked_fraction divides by all rows, its per-option one (and ours) by
    # the non-empty rows: on purpose, an empty row has nothing to mask.
    rows, nonempty = mask.shape[0], int((mask.sum(-1) > 0).sum())
    close(ours["rollout_corr/rs_masked_seq_frac"] * nonempty / rows, verl["rollout_rs_seq_masked_fraction"],
          "rs_masked_seq_frac relation")
    assert_offpolicy_metrics(ours, verl, mask)


def test_is_and_rs_together_match_verl():
    old, rollout, mask = log_probs(4)
    batch, ours = ours_apply(old, rollout, mask, rollout_is="token", rollout_is_threshold=2.0,
                             rollout_is_batch_normalize=True, rollout_rs="geometric", rollout_rs_threshold=1.3)
    weights, new_mask, verl = verl_apply(old, rollout, mask, rollout_is="token", rollout_is_threshold=2.0,
                                         rollout_is_batch_normalize=True, rollout_rs="seq_mean_k1",
                                         rollout_rs_threshold=1.3)
    torch.testing.assert_close(batch.is_weights, weights, **F32)
    assert torch.equal(batch.rs_mask * mask, new_mask)


def test_sequence_rejection_beyond_safety_bound_differs_from_verl_on_purpose():
    """Token log-ratios 25, -22, 0: the sequence ratio is e^3, outside [1/2, 2], so ours rejects it. verl's
    seq_sum_k1 clamps each token to +-20 before summing (20 - 20 = 0) and keeps it, while verl's own
    sequence IS sums the raw log-ratios: ours follows the product of the ratios."""
    mask = torch.ones(1, 3)
    old = torch.tensor([[-0.5, -22.5, -1.0]])
    rollout = torch.tensor([[-25.5, -0.5, -1.0]])
    kept = ours_apply(old, rollout, mask, rollout_is=None, rollout_rs="sequence", rollout_rs_threshold=2.0)[0].rs_mask
    assert torch.equal(kept, torch.zeros(1, 3))
    assert torch.equal(verl_apply(old, rollout, mask, rollout_is=None, rollout_rs="seq_sum_k1",
                                  rollout_rs_threshold=2.0)[1], torch.ones(1, 3))


def test_k3_kl_metric_beyond_safety_bound_matches_verl():
    mask = torch.ones(1, 2)
    old, rollout = torch.tensor([[-0.5, -1.0]]), torch.tensor([[-25.5, -1.0]])
    ours = correction_metrics(old, rollout, mask)
    close(ours["rollout_corr/k3_kl"], verl_rc.compute_offpolicy_metrics(old, rollout, mask)["k3_kl"], "k3_kl")


def test_batch_normalize_of_vanishing_weights_matches_verl():
    mask = torch.ones(2, 3)
    old, rollout = torch.full((2, 3), -20.5), torch.full((2, 3), -0.5)  # every ratio e^-20 ~ 2e-9
    batch, _ = ours_apply(old, rollout, mask, rollout_is="token", rollout_is_batch_normalize=True)
    weights = verl_apply(old, rollout, mask, rollout_is="token", rollout_is_batch_normalize=True)[0]
    torch.testing.assert_close(batch.is_weights, weights, **F32)


def test_rejection_thresholds_are_in_log_space_on_both_sides():
    """A token exactly on the band's edge is kept by both (``>=`` / ``<=`` in log space)."""
    mask = torch.ones(1, 2)
    old = torch.tensor([[math.log(2.0) - 1.0, -1.0 - math.log(2.0)]])
    rollout = torch.tensor([[-1.0, -1.0]])
    kept = ours_apply(old, rollout, mask, rollout_is=None, rollout_rs="token", rollout_rs_threshold=2.0)[0].rs_mask
    assert torch.equal(kept, verl_apply(old, rollout, mask, rollout_is=None, rollout_rs="token_k1",
                                        rollout_rs_threshold=2.0)[1])

"""Rollout/training mismatch correction: importance weights, rejection masks and their diagnostics.

The rollout engine samples with block-sparse decode attention (policy ``p_r``); the learner scores the
same tokens with the dense model (policy ``p_t``, verl's ``old_log_prob``). The PPO ratio is taken
against ``p_t``; the correction reweights or drops tokens for having sampled from ``p_r``. Names follow
verl's ``rollout_corr_helper`` (``rollout_is``, ``rollout_rs``, thresholds, ``rollout_is_batch_normalize``).

- Importance sampling (Yao et al., "Your efficient RL framework secretly brings you off-policy RL
  training", 2025): weight ``min(rho, threshold)`` where ``rho`` is, by ``rollout_is`` mode, the token's
  ratio ``p_t / p_r`` (``token``), the product over the sequence (``sequence``) or its geometric mean
  (``geometric``), every token of a sequence sharing the sequence's weight.
- Rejection (masking, as IcePop, "Small leak can sink a great ship", 2025): tokens (``token``) or whole
  sequences (``sequence``, ``geometric``) whose ratio falls outside ``[low, high]`` leave the loss.

Every aggregation is a registered ``fn(log_ratio, response_mask) -> log_rho``, ``[batch, response_len]``
in, ``[batch, response_len]`` (token level) or ``[batch, 1]`` (sequence level) out. Log-ratios are
clamped to +-20 before ``exp`` (verl's safety bound).
"""

from __future__ import annotations

import math

import torch

from vortex_rl.registry import Registry

ROLLOUT_IS: Registry = Registry("rollout importance-sampling mode")
ROLLOUT_RS: Registry = Registry("rollout rejection-sampling mode")
SAFETY_BOUND = 20.0


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(-1, keepdim=True)


@ROLLOUT_RS.register("token")
@ROLLOUT_IS.register("token")
def token_log_ratio(log_ratio: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Each token's own ``log(p_t / p_r)``: ``[batch, response_len]``."""
    return log_ratio * response_mask


@ROLLOUT_RS.register("sequence")
@ROLLOUT_IS.register("sequence")
def sequence_log_ratio(log_ratio: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``log`` of the product of the sequence's token ratios: ``[batch, 1]``."""
    return _masked_sum(log_ratio, response_mask)


@ROLLOUT_RS.register("geometric")
@ROLLOUT_IS.register("geometric")
def geometric_log_ratio(log_ratio: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``log`` of the geometric mean of the sequence's token ratios: ``[batch, 1]`` (0 for empty rows)."""
    return _masked_sum(log_ratio, response_mask) / response_mask.sum(-1, keepdim=True).clamp(min=1)


def _log_rho(mode: str, registry: Registry, old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor,
             response_mask: torch.Tensor) -> torch.Tensor:
    """The mode's log-ratio broadcast to ``[batch, response_len]``."""
    log_ratio = (old_log_prob - rollout_log_prob).float()
    return registry.get(mode)(log_ratio, response_mask.float()).expand_as(log_ratio)


def is_weights(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor, *,
               mode: str = "token", threshold: float = 2.0) -> torch.Tensor:
    """Truncated importance weights ``min(rho, threshold)`` with ``rho`` from the ``rollout_is`` ``mode``
    (``rollout_is_batch_normalize`` then divides them by ``batch_mean``).

    Parameters
    ----------
    old_log_prob, rollout_log_prob, response_mask: ``[batch, response_len]``.

    Returns
    -------
    ``[batch, response_len]`` float32, detached, 0 at masked positions.
    """
    mask = response_mask.float()
    log_rho = _log_rho(mode, ROLLOUT_IS, old_log_prob, rollout_log_prob, mask).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return (log_rho.exp().clamp(max=threshold) * mask).detach()


def batch_mean(weights: torch.Tensor, mask: torch.Tensor, *, per_sequence: bool) -> torch.Tensor:
    """Mean of ``[batch, response_len]`` weights over valid tokens, or over non-empty sequences (one weight
    each) with ``per_sequence``; a 0-dim tensor. Dividing by it makes the weights average 1 (verl's
    ``rollout_is_batch_normalize``)."""
    if not per_sequence:
        return (weights * mask).sum() / mask.sum().clamp(min=1)
    lengths = mask.sum(-1)
    seq_weights = (weights * mask).sum(-1) / lengths.clamp(min=1)
    rows = (lengths > 0).float()
    return (seq_weights * rows).sum() / rows.sum().clamp(min=1)


def rejection_mask(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor, *,
                   mode: str = "token", high: float = 2.0, low: float | None = None) -> torch.Tensor:
    """``[batch, response_len]`` float: 1 where the ``rollout_rs`` ``mode``'s ratio lies in ``[low, high]``
    (``low`` defaults to ``1 / high``), 0 where it is rejected and at padding. Compared in log space, so
    ratios beyond the safety bound are still rejected correctly."""
    low = 1.0 / high if low is None else low
    log_rho = _log_rho(mode, ROLLOUT_RS, old_log_prob, rollout_log_prob, response_mask)
    keep = (log_rho >= math.log(low)) & (log_rho <= math.log(high))
    return keep.float() * response_mask.float()


def correction_metrics(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor,
                       *, weights: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                       threshold: float = 2.0) -> dict[str, float]:
    """``rollout_corr/*`` diagnostics over the valid tokens of ``[batch, response_len]`` tensors.

    ``kl``: mean of ``log p_r - log p_t`` (k1 estimate of KL(p_r || p_t), tokens drawn from ``p_r``);
    ``k3_kl``: mean of ``r - log r - 1`` with ``r = p_t / p_r``, not clamped (``inf`` past ``log r`` of
    about 88 in float32, as in verl); ``chi2_token`` / ``chi2_seq``: the
    chi-square divergence ``E_{p_r}[rho^2] - 1`` of the token and of the sequence ratio (safety-clamped);
    ``is_truncated_frac``: how often the token ratio exceeds ``threshold``. With ``weights`` (the applied
    IS weights): ``is_weight_mean`` (of the truncated weights; the raw ratio's mean is dominated by
    outliers) and ``ess``, the effective sample size ``(sum w)^2 / (n sum w^2)`` in (0, 1]. With ``keep``
    (the rejection mask): ``rs_masked_token_frac`` and ``rs_masked_seq_frac`` (a sequence counts as
    masked when any of its tokens is).
    """
    mask = response_mask.bool()
    if not mask.any():
        return {}
    log_r = (old_log_prob - rollout_log_prob).float()
    log_r_valid = log_r[mask]
    ratio = log_r_valid.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp()
    seq_log = sequence_log_ratio(log_r, response_mask.float()).squeeze(-1)[mask.any(-1)]
    metrics = {
        "rollout_corr/kl": (-log_r_valid).mean().item(),
        # Unclamped, as verl's compute_offpolicy_metrics: the clamped ratio with the raw log r is neither
        # k3 of the clamped ratio nor of the true one.
        "rollout_corr/k3_kl": (log_r_valid.exp() - log_r_valid - 1).mean().item(),
        "rollout_corr/chi2_token": (ratio.square().mean() - 1).item(),
        "rollout_corr/chi2_seq": (seq_log.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp().square().mean() - 1).item(),
        "rollout_corr/is_truncated_frac": (ratio > threshold).float().mean().item(),
    }
    if weights is not None:
        w = weights.float()[mask]
        metrics["rollout_corr/is_weight_mean"] = w.mean().item()
        metrics["rollout_corr/ess"] = (w.sum().square() / (w.numel() * w.square().sum()).clamp(min=1e-30)).item()
    if keep is not None:
        dropped = (keep < 0.5) & mask
        metrics["rollout_corr/rs_masked_token_frac"] = dropped[mask].float().mean().item()
        metrics["rollout_corr/rs_masked_seq_frac"] = dropped.any(-1)[mask.any(-1)].float().mean().item()
    return metrics

"""Rollout/training mismatch: truncated importance sampling and how far the two policies differ.

The rollout engine samples with block-sparse decode attention (policy ``p_r``); the learner scores the
same tokens with the dense model (policy ``p_t``, verl's ``old_log_prob``). The PPO ratio is taken
against ``p_t``; a truncated importance weight ``min(p_t(y) / p_r(y), C)`` per token corrects for
having sampled from ``p_r`` (Yao et al., "Your efficient RL framework secretly brings you off-policy
RL training", 2025).

Acceptance rate. For one position, ``alpha = sum_v min(p_r(v), p_t(v)) = 1 - TV(p_r, p_t)`` is the
probability that a token drawn from ``p_r`` is accepted as a draw from ``p_t`` (speculative-decoding
coupling). Only the top-k log-probs of each side are known, so we report the lower bound

    alpha_k = sum over v in (R ∪ T) of min(p_r(v), p_t(v)),  p_r(v) = 0 for v not in R, p_t(v) = 0 for v not in T,

where R and T are the top-k token sets of the rollout and of the trainer; equivalently the sum over
``R ∩ T``. It equals ``alpha`` when both top-k sets carry all the mass and never exceeds it.
"""

from __future__ import annotations

import torch

from vortex_rl.registry import Registry

# ``fn(old_log_prob, rollout_log_prob, response_mask, *, threshold) -> weights``, all ``[batch, response_len]``.
ROLLOUT_IS: Registry = Registry("rollout importance-sampling mode")


@ROLLOUT_IS.register("token")
def truncated_is_weights(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor,
                         *, threshold: float) -> torch.Tensor:
    """Token-level truncated importance weights ``min(exp(old_log_prob - rollout_log_prob), threshold)``.

    Parameters
    ----------
    old_log_prob, rollout_log_prob, response_mask: ``[batch, response_len]``.

    Returns
    -------
    ``[batch, response_len]`` float, detached, 0 at masked positions.
    """
    log_ratio = (old_log_prob - rollout_log_prob).clamp(-20.0, 20.0)
    return (log_ratio.exp().clamp(max=threshold) * response_mask).detach()


def acceptance_alpha(rollout_ids: torch.Tensor, rollout_logprobs: torch.Tensor, train_ids: torch.Tensor,
                     train_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-position lower bound ``alpha_k`` of ``sum_v min(p_r(v), p_t(v))`` from top-k log-probs.

    Parameters
    ----------
    rollout_ids, rollout_logprobs: ``[..., k_r]`` the rollout's top tokens (id ``-1`` = no entry).
    train_ids, train_logprobs: ``[..., k_t]`` the trainer's top tokens. Ids are distinct per position.

    Returns
    -------
    ``[...]`` float32 in [0, 1].
    """
    match = (rollout_ids.unsqueeze(-1) == train_ids.unsqueeze(-2)) & (rollout_ids >= 0).unsqueeze(-1)
    p_r = rollout_logprobs.float().exp().unsqueeze(-1)
    p_t = train_logprobs.float().exp().unsqueeze(-2)
    return (torch.minimum(p_r, p_t) * match).sum(dim=(-1, -2))


def percentile_by_position(values: torch.Tensor, mask: torch.Tensor, *, bin_tokens: int, q: float = 0.05
                           ) -> dict[tuple[int, int], float]:
    """The ``q`` quantile of ``values`` per response-position bin ``[i * bin_tokens, (i + 1) * bin_tokens)``.

    ``values``, ``mask``: ``[batch, response_len]``. Bins without valid tokens are left out. Quantiles
    interpolate linearly (``numpy.percentile``'s default).
    """
    out: dict[tuple[int, int], float] = {}
    for start in range(0, values.shape[-1], bin_tokens):
        chunk = values[:, start : start + bin_tokens][mask[:, start : start + bin_tokens].bool()]
        if chunk.numel():
            out[(start, start + bin_tokens)] = torch.quantile(chunk.float(), q).item()
    return out


def mismatch_metrics(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor, *,
                     alpha: torch.Tensor | None = None, topk_mass: torch.Tensor | None = None,
                     threshold: float = 2.0, bin_tokens: int = 2048) -> dict[str, float]:
    """``rollout_corr/*`` metrics over the valid tokens of a batch ``[batch, response_len]``.

    ``kl``: mean of ``log p_r - log p_t`` (k1 estimate of KL(p_r || p_t), tokens drawn from ``p_r``);
    ``k3_kl``: mean of ``r - log r - 1`` with ``r = p_t / p_r``; ``is_weight_mean`` /
    ``is_truncated_frac``: the untruncated ratio's mean and how often it exceeds ``threshold``;
    ``alpha_mean``, ``alpha_p5`` and ``alpha_p5/pos_<a>-<b>`` when ``alpha`` is given;
    ``topk_mass_mean``: the rollout's top-k probability mass (``alpha_k`` cannot exceed it, so a low
    ``alpha_k`` at high-entropy positions may reflect the top-k cut rather than a mismatch).
    """
    mask = response_mask.bool()
    log_r = (old_log_prob - rollout_log_prob).float()[mask]
    if log_r.numel() == 0:
        return {}
    ratio = log_r.clamp(-20.0, 20.0).exp()
    metrics = {
        "rollout_corr/kl": (-log_r).mean().item(),
        "rollout_corr/k3_kl": (ratio - log_r - 1).mean().item(),
        "rollout_corr/is_weight_mean": ratio.mean().item(),
        "rollout_corr/is_truncated_frac": (ratio > threshold).float().mean().item(),
    }
    if alpha is not None:
        metrics["rollout_corr/alpha_mean"] = alpha[mask].mean().item()
        if topk_mass is not None:
            metrics["rollout_corr/topk_mass_mean"] = topk_mass[mask].mean().item()
        metrics["rollout_corr/alpha_p5"] = torch.quantile(alpha[mask].float(), 0.05).item()
        for (start, end), value in percentile_by_position(alpha, response_mask, bin_tokens=bin_tokens).items():
            metrics[f"rollout_corr/alpha_p5/pos_{start}-{end}"] = value
    return metrics

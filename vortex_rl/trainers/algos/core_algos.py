"""The RL math as small pure tensor functions, registered by name (after verl's ``core_algos``).

Registries (an unknown name raises with the known ones):

- advantage estimators ``fn(scores [N], group_ids [N], *, norm_by_std, eps) -> advantages [N]``;
- policy losses ``fn(log_prob, old_log_prob, advantages, response_mask, *, config, rollout_is_weights,
  num_tokens) -> (loss, metrics)``, token tensors ``[batch, response_len]``;
- KL estimators ``fn(log_prob, ref_log_prob) -> kl`` per token.

References: GRPO, DeepSeekMath (https://arxiv.org/abs/2402.03300); PPO clipping, Schulman et al. 2017
(https://arxiv.org/abs/1707.06347); decoupled clip ranges, DAPO (https://arxiv.org/abs/2503.14476);
KL estimators k1/k3, http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from vortex_rl.registry import Registry

ADV_ESTIMATORS: Registry = Registry("advantage estimator")
POLICY_LOSSES: Registry = Registry("policy loss")
KL_ESTIMATORS: Registry = Registry("KL estimator")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def register_adv_estimator(name: str) -> Callable:
    return ADV_ESTIMATORS.register(name)


def register_policy_loss(name: str) -> Callable:
    return POLICY_LOSSES.register(name)


def get_adv_estimator(name: str) -> Callable:
    return ADV_ESTIMATORS.get(name)


def get_policy_loss(name: str) -> Callable:
    return POLICY_LOSSES.get(name)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is set (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


@register_adv_estimator("grpo")
def grpo_advantages(scores: torch.Tensor, group_ids: torch.Tensor, *, norm_by_std: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantages: each score relative to its group (the samples of one prompt).

    ``(score - group_mean) / (group_std + eps)``, or ``score - group_mean`` without ``norm_by_std``;
    the standard deviation is unbiased (``torch.std``). A group of one sample uses mean 0 and std 1,
    as verl's ``compute_grpo_outcome_advantage`` does.

    Parameters
    ----------
    scores: ``[num_samples]`` float, one scalar reward per response.
    group_ids: ``[num_samples]`` int, samples with equal ids form a group.

    Returns
    -------
    ``[num_samples]`` float32 advantages (broadcast over a response's tokens by the loss).
    """
    if scores.ndim != 1 or group_ids.shape != scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and group_ids {tuple(group_ids.shape)} must be equal 1-D shapes")
    scores = scores.float()
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    sums = torch.zeros(counts.numel(), dtype=scores.dtype, device=scores.device).index_add_(0, inverse, scores)
    mean = sums / counts
    squares = torch.zeros_like(sums).index_add_(0, inverse, (scores - mean[inverse]) ** 2)
    std = (squares / (counts - 1).clamp(min=1)).sqrt()
    singleton = counts == 1
    mean = torch.where(singleton, torch.zeros_like(mean), mean)
    std = torch.where(singleton, torch.ones_like(std), std)
    centred = scores - mean[inverse]
    return centred / (std[inverse] + eps) if norm_by_std else centred


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, *, num_tokens: float | None = None,
             num_seqs: float | None = None) -> torch.Tensor:
    """Aggregate per-token losses ``[batch, response_len]`` to a scalar.

    ``token-mean``: sum over valid tokens / ``num_tokens``; ``seq-mean-token-sum``: per-sequence token
    sums averaged over ``num_seqs``; ``seq-mean-token-mean``: per-sequence token means averaged over
    ``num_seqs``. ``num_tokens`` / ``num_seqs`` default to this batch's counts (valid tokens; rows with at
    least one valid token, as verl's ``agg_loss``: a row that rejection sampling masked whole is not a
    sequence of the mean); pass the mini-batch's counts when accumulating micro-batches, so the
    micro-batch losses add up to the mini-batch loss.
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        denominator = num_tokens if num_tokens is not None else mask.sum().clamp(min=1)
        return (loss_mat * mask).sum() / denominator
    per_seq = (loss_mat * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(-1).clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"loss_agg_mode={mode!r} is not one of {LOSS_AGG_MODES}")
    return per_seq.sum() / (num_seqs if num_seqs is not None else (mask.sum(-1) > 0).sum().clamp(min=1))


@register_policy_loss("vanilla")
def vanilla_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, *, config: Any, rollout_is_weights: torch.Tensor | None = None,
                        num_tokens: float | None = None, num_seqs: float | None = None,
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped objective with separate low/high clip and dual clip (verl ``compute_policy_loss_vanilla``).

    Per token: ``ratio = exp(log_prob - old_log_prob)``, loss ``max(-A * ratio, -A * clip(ratio, 1 - low,
    1 + high))``, for ``A < 0`` bounded above by ``-A * clip_ratio_c``; times ``rollout_is_weights``
    (truncated importance weights, detached) when given; aggregated by ``config.loss_agg_mode``.

    Parameters
    ----------
    log_prob, old_log_prob, advantages, response_mask, rollout_is_weights: ``[batch, response_len]``.
    config: has ``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``, ``loss_agg_mode`` (``ActorConfig``).
    num_tokens, num_seqs: mini-batch counts for ``agg_loss``.

    Returns
    -------
    ``(loss, metrics)``; metrics ``pg_clipfrac``, ``pg_clipfrac_lower``, ``ppo_kl`` are token means
    normalised like the loss, so micro-batch values add up to the mini-batch value.
    """
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - config.clip_ratio_low, 1 + config.clip_ratio_high)
    clip_max = torch.maximum(unclipped, clipped)
    dual = torch.minimum(-advantages * config.clip_ratio_c, clip_max)
    pg_losses = torch.where(advantages < 0, dual, clip_max)
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights.detach()
    loss = agg_loss(pg_losses, response_mask, config.loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs)
    token_mean = lambda x: agg_loss(x.float(), response_mask, "token-mean", num_tokens=num_tokens)  # noqa: E731
    metrics = {
        "pg_clipfrac": token_mean(clipped > unclipped).detach(),
        "pg_clipfrac_lower": token_mean((clip_max > dual) & (advantages < 0)).detach(),
        "ppo_kl": token_mean(-log_ratio).detach(),
    }
    return loss, metrics


@KL_ESTIMATORS.register("k1")
@KL_ESTIMATORS.register("kl")
def kl_k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(pi || ref) per token: ``log_prob - ref_log_prob`` (unbiased, high variance)."""
    return log_prob - ref_log_prob


@KL_ESTIMATORS.register("k3")
@KL_ESTIMATORS.register("low_var_kl")
def kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || ref) per token: ``r - log r - 1`` with ``r = ref / pi``; non-negative.

    As in verl, ``log r`` is clamped to [-20, 20] and the result to [-10, 10] for stability.
    """
    log_r = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
    return (log_r.exp() - log_r - 1).clamp(-10.0, 10.0)


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate of the registered kind (``k1``/``kl`` or ``k3``/``low_var_kl``)."""
    return KL_ESTIMATORS.get(kind)(log_prob, ref_log_prob)


def entropy_from_logits(logits: torch.Tensor, log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last dim: ``logsumexp(l) - sum(softmax(l) * l)``; ``[...]``.
    ``log_norm``: ``logsumexp(logits, -1)`` when the caller has it already (one pass over the vocabulary less)."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    if log_norm is None:
        log_norm = torch.logsumexp(logits, dim=-1)
    return log_norm - (probs * logits).sum(-1)

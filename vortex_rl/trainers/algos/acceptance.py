"""Acceptance rate between the rollout policy ``p_r`` (sparse) and the training policy ``p_t`` (dense).

For one position, ``alpha = sum_v min(p_r(v), p_t(v)) = 1 - TV(p_r, p_t)`` is the probability that a
token drawn from ``p_r`` is accepted as a draw from ``p_t`` (speculative-decoding coupling). Only the
top-k log-probs of each side are known (token sets ``R`` and ``T``), which brackets it:

    alpha_k = sum over v in R ∩ T of min(p_r(v), p_t(v))                         (lower bound)
    alpha_k + min(1 - P_r(R ∩ T), 1 - P_t(R ∩ T))                                 (upper bound)

The upper bound holds because the tokens outside ``R ∩ T`` add ``sum min(p_r, p_t)``, which is at most
the mass either side puts outside ``R ∩ T``. Both equal ``alpha`` when the top-k sets carry all the mass.

Where they do not (high temperature, a flat distribution), the lower bound is at most the top-k mass even
for two identical policies, so a floor on it cannot tell a sparse mismatch from the top-k cut. The point
estimate ``alpha_est`` assumes the mass outside ``R ∩ T`` overlaps at the rate it does inside:

    alpha_est = alpha_k + rho * min(1 - P_r(R ∩ T), 1 - P_t(R ∩ T)),   rho = alpha_k / min(P_r(R ∩ T), P_t(R ∩ T))

``rho`` lies in [0, 1], so ``alpha_k <= alpha_est <= upper``; two identical policies give 1 whatever the
cut, and with the top-k sets carrying all the mass it is ``alpha``.

Quantiles are exact and scale to any number of tokens (``torch.quantile`` refuses more than 2^24
elements): two ``kthvalue`` selections, interpolated linearly as ``numpy.percentile`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class AlphaBounds(NamedTuple):
    """Per-position acceptance rate from top-k log-probs, each ``[...]`` float32 in [0, 1]:
    ``lower <= estimate <= upper`` (module docstring)."""

    lower: torch.Tensor
    estimate: torch.Tensor
    upper: torch.Tensor


def acceptance_alpha_bounds(rollout_ids: torch.Tensor, rollout_logprobs: torch.Tensor, train_ids: torch.Tensor,
                            train_logprobs: torch.Tensor) -> AlphaBounds:
    """Per-position lower and upper bounds of ``sum_v min(p_r(v), p_t(v))`` from top-k log-probs, and the
    point estimate between them.

    Parameters
    ----------
    rollout_ids, rollout_logprobs: ``[..., k_r]`` the rollout's top tokens (id ``-1`` = no entry).
    train_ids, train_logprobs: ``[..., k_t]`` the trainer's top tokens. Ids are distinct per position.

    Returns
    -------
    ``AlphaBounds(lower, estimate, upper)``, each ``[...]`` float32 in [0, 1]. The ``[..., k_r, k_t]``
    match tensor lives only inside this call: call it per micro-batch, on the device.
    """
    match = (rollout_ids.unsqueeze(-1) == train_ids.unsqueeze(-2)) & (rollout_ids >= 0).unsqueeze(-1)
    p_r = rollout_logprobs.float().exp().unsqueeze(-1)
    p_t = train_logprobs.float().exp().unsqueeze(-2)
    lower = (torch.minimum(p_r, p_t) * match).sum(dim=(-1, -2))
    shared_r = (p_r * match).sum(dim=(-1, -2))
    shared_t = (p_t * match).sum(dim=(-1, -2))
    slack = torch.minimum(1 - shared_r, 1 - shared_t).clamp(min=0)
    shared = torch.minimum(shared_r, shared_t)
    # No shared token: no rate to carry over, the estimate stays at the lower bound (0).
    rho = torch.where(shared > 0, lower / shared.clamp(min=1e-30), torch.zeros_like(lower)).clamp(0.0, 1.0)
    upper = (lower + slack).clamp(max=1.0)
    return AlphaBounds(lower, torch.minimum(lower + rho * slack, upper), upper)


def exact_quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of a 1-D tensor of any size, interpolated linearly (``numpy.percentile``'s default).

    Raises ``ValueError`` on an empty tensor or ``q`` outside [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q={q} must lie in [0, 1]")
    flat = values.reshape(-1).float()
    n = flat.numel()
    if n == 0:
        raise ValueError("exact_quantile of an empty tensor")
    position = (n - 1) * q
    below = int(position)
    low = flat.kthvalue(below + 1).values
    if below + 1 >= n or position == below:
        return float(low)
    high = flat.kthvalue(below + 2).values
    return float(low + (high - low) * (position - below))


def percentile_by_position(values: torch.Tensor, mask: torch.Tensor, *, bin_tokens: int, q: float = 0.05,
                           offsets: torch.Tensor | None = None) -> dict[tuple[int, int], float]:
    """The ``q`` quantile of ``values`` per position bin ``[i * bin_tokens, (i + 1) * bin_tokens)``.

    ``values``, ``mask``: ``[batch, response_len]``. A token's position is its response index, plus
    ``offsets[row]`` when given (``[batch]``, e.g. prompt lengths: then bins are context positions, as
    the budget schedule reads them). Bins without valid tokens are left out.
    """
    positions = torch.arange(values.shape[-1]).expand_as(values)
    if offsets is not None:
        positions = positions + offsets.reshape(-1, 1).to(positions.dtype)
    valid = mask.bool()
    bins = torch.div(positions, bin_tokens, rounding_mode="floor")
    out: dict[tuple[int, int], float] = {}
    for b in torch.unique(bins[valid]).tolist():
        chunk = values[valid & (bins == b)]
        out[(b * bin_tokens, (b + 1) * bin_tokens)] = exact_quantile(chunk, q)
    return out


def alpha_metrics(alpha: torch.Tensor, alpha_upper: torch.Tensor | None, mask: torch.Tensor, *, bin_tokens: int,
                  topk_mass: torch.Tensor | None = None, alpha_est: torch.Tensor | None = None) -> dict[str, float]:
    """``rollout_corr/alpha_*`` over the valid tokens of ``[batch, response_len]`` tensors.

    ``alpha_mean`` / ``alpha_p5`` (lower bound), ``alpha_upper_mean`` / ``alpha_upper_p5``,
    ``alpha_est_mean`` / ``alpha_est_p5`` (the point estimate), ``alpha_p5/pos_<a>-<b>`` (and
    ``alpha_est_p5/pos_<a>-<b>``) per response-position bin, ``topk_mass_mean`` (the rollout's top-k mass:
    ``alpha_k`` cannot exceed it, so a low ``alpha_k`` at high-entropy positions may be the top-k cut).
    """
    valid = mask.bool()
    if not valid.any():
        return {}
    metrics = {"rollout_corr/alpha_mean": alpha[valid].float().mean().item(),
               "rollout_corr/alpha_p5": exact_quantile(alpha[valid], 0.05)}
    if alpha_upper is not None:
        metrics["rollout_corr/alpha_upper_mean"] = alpha_upper[valid].float().mean().item()
        metrics["rollout_corr/alpha_upper_p5"] = exact_quantile(alpha_upper[valid], 0.05)
    if alpha_est is not None:
        metrics["rollout_corr/alpha_est_mean"] = alpha_est[valid].float().mean().item()
        metrics["rollout_corr/alpha_est_p5"] = exact_quantile(alpha_est[valid], 0.05)
    if topk_mass is not None:
        metrics["rollout_corr/topk_mass_mean"] = topk_mass[valid].float().mean().item()
    for (start, end), value in percentile_by_position(alpha, mask, bin_tokens=bin_tokens).items():
        metrics[f"rollout_corr/alpha_p5/pos_{start}-{end}"] = value
    if alpha_est is not None:
        for (start, end), value in percentile_by_position(alpha_est, mask, bin_tokens=bin_tokens).items():
            metrics[f"rollout_corr/alpha_est_p5/pos_{start}-{end}"] = value
    return metrics

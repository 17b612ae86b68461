"""The actor's loss on one micro-batch: registered policy loss, the optional entropy bonus and KL term."""

from __future__ import annotations

import torch

from vortex_rl.trainers.algos.core_algos import agg_loss, get_policy_loss, kl_penalty
from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import ActorConfig
from vortex_rl.trainers.local.logprobs import score_responses


def loss_mask(batch: RolloutBatch, *, mask_truncated: bool) -> torch.Tensor:
    """``[batch, response_len]``: generated tokens, without truncated responses when ``mask_truncated`` and
    without the tokens rollout rejection sampling dropped (``batch.rs_mask``)."""
    mask = batch.response_mask
    if batch.rs_mask is not None:
        mask = mask * batch.rs_mask
    if mask_truncated:
        mask = mask * (~batch.truncated).to(mask.dtype).unsqueeze(1)
    return mask


def micro_batch_loss(model: torch.nn.Module, mb: RolloutBatch, *, config: ActorConfig, temperature: float,
                     mask: torch.Tensor, num_tokens: float, num_seqs: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of micro-batch ``mb`` scaled so micro-batch losses sum to the mini-batch loss: the registered
    policy loss, minus ``config.entropy_coeff`` times the entropy, plus ``config.kl_loss_coef`` times the KL.

    ``mb`` must carry ``old_log_probs`` and ``advantages`` (and ``ref_log_probs`` with the KL loss);
    ``mask`` is its loss mask ``[batch, response_len]``; ``num_tokens`` / ``num_seqs`` count the mini-batch.
    """
    scores = score_responses(model, mb, temperature=temperature, chunk_tokens=config.logits_chunk_tokens,
                             with_entropy=config.entropy_coeff > 0)
    advantages = mb.advantages.unsqueeze(1).expand_as(scores.log_probs)
    policy_loss = get_policy_loss(config.policy_loss)
    loss, metrics = policy_loss(
        scores.log_probs, mb.old_log_probs, advantages, mask, config=config, rollout_is_weights=mb.is_weights,
        num_tokens=num_tokens, num_seqs=num_seqs,
    )
    out = {f"actor/{k}": float(v) for k, v in metrics.items()}
    out["actor/pg_loss"] = float(loss.detach())
    if config.entropy_coeff > 0:  # verl's entropy bonus: higher entropy lowers the loss
        entropy = agg_loss(scores.entropy, mask, config.loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs)
        loss = loss - config.entropy_coeff * entropy
        out["actor/entropy_loss"] = float(entropy.detach())
    if config.use_kl_loss:
        kl = kl_penalty(scores.log_probs, mb.ref_log_probs, config.kl_loss_type)
        kl_loss = agg_loss(kl, mask, config.loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs)
        loss = loss + config.kl_loss_coef * kl_loss
        out["actor/kl_loss"] = float(kl_loss.detach())
    return loss, out

"""Dense forward of the actor: per-token log-probs of the sampled responses, entropy and top-k."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.trainers.algos.core_algos import entropy_from_logits
from vortex_rl.trainers.batch import RolloutBatch


@dataclass
class ResponseScores:
    """Per response token, ``[batch, response_len]`` (top-k: ``[batch, response_len, k]``)."""

    log_probs: torch.Tensor
    entropy: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    topk_log_probs: torch.Tensor | None = None


def response_logits(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """Logits that predict each response token: ``[batch, response_len, vocab]`` in float32.

    Rows are right-padded, so plain causal attention (no mask) gives every real token the same
    result as an unpadded forward. Positions past a response's end are clamped and must be masked.
    """
    logits = model(input_ids=batch.input_ids, use_cache=False).logits
    response_len, seq_len = batch.responses.shape[1], batch.input_ids.shape[1]
    steps = torch.arange(response_len, device=logits.device)
    positions = (batch.prompt_lens.unsqueeze(1) - 1 + steps).clamp(max=seq_len - 1)
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index).float()


def score_responses(model: torch.nn.Module, batch: RolloutBatch, *, temperature: float, topk: int = 0,
                    with_entropy: bool = False) -> ResponseScores:
    """Log-probs of ``batch.responses`` under ``softmax(logits / temperature)`` (the rollout's distribution
    when it samples without top-k/top-p filtering), optionally entropy and the top-``topk`` tokens.
    """
    logits = response_logits(model, batch) / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    log_probs = logits.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1) - log_norm
    out = ResponseScores(log_probs=log_probs)
    if with_entropy:
        out.entropy = entropy_from_logits(logits)
    if topk > 0:
        values, ids = logits.topk(topk, dim=-1)
        out.topk_ids, out.topk_log_probs = ids, values - log_norm.unsqueeze(-1)
    return out

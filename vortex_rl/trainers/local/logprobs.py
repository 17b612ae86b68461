"""Dense forward of the actor: per-token log-probs of the sampled responses, entropy and top-k.

The ``[tokens, vocab]`` logits are the largest tensors of a long-response step (Qwen3's 151,936-entry
vocabulary in float32 is 608 KB per token: 11 GB for an 18K-token micro-batch, before the copies that
temperature, ``logsumexp``, entropy and their gradients make). So the model's output head is not run on
the whole micro-batch: its forward is swapped, for one call of the model, for a scorer that takes the
final hidden states of the response positions ``chunk_tokens`` at a time and keeps only per-token
numbers. With gradients on, each chunk runs under activation checkpointing (its logits are recomputed
in the backward pass), so at most one chunk's logits exist at any time. The model is still called as a
whole (``model(input_ids=...)``): wrappers that act around its forward, FSDP2's parameter gathering
among them, see an ordinary call whose output the loss depends on.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vortex_rl.trainers.algos.core_algos import entropy_from_logits
from vortex_rl.trainers.batch import RolloutBatch

# Response tokens whose logits exist at once: 1024 x 151,936 float32 is 622 MB (a few such tensors live
# while a chunk is scored); the output head's matmul stays large enough to run at full speed.
DEFAULT_CHUNK_TOKENS = 1024


@dataclass
class ResponseScores:
    """Per response token, ``[batch, response_len]`` (top-k: ``[batch, response_len, k]``)."""

    log_probs: torch.Tensor
    entropy: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    topk_log_probs: torch.Tensor | None = None


def response_positions(batch: RolloutBatch) -> torch.Tensor:
    """``[batch, response_len]`` int64: the position whose logits predict each response token.

    Rows are right-padded, so plain causal attention (no mask) gives every real token the same result as
    an unpadded forward. Positions past a response's end are clamped and must be masked.
    """
    response_len, seq_len = batch.responses.shape[1], batch.input_ids.shape[1]
    steps = torch.arange(response_len, device=batch.input_ids.device)
    return (batch.prompt_lens.to(steps.device).unsqueeze(1) - 1 + steps).clamp(max=seq_len - 1)


def score_token_chunk(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                      *, temperature: float, topk: int, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores of ``targets [n]`` under ``softmax(hidden @ weight.T + bias) / temperature``.

    hidden: ``[n, hidden_size]``; weight: ``[vocab, hidden_size]``. Returns ``(values [n, 1 + entropy +
    topk] float32, topk_ids [n, topk] or None)``: the log-prob, then the entropy, then the top-``topk``
    log-probs, in that order.
    """
    logits = F.linear(hidden, weight, bias).float() / temperature  # [n, vocab]
    log_norm = torch.logsumexp(logits, dim=-1)
    columns = [logits.gather(-1, targets[:, None]).squeeze(-1) - log_norm]
    if with_entropy:
        columns.append(entropy_from_logits(logits, log_norm))
    topk_ids = None
    if topk > 0:
        values, topk_ids = logits.topk(topk, dim=-1)
        columns.extend((values - log_norm[:, None]).unbind(-1))
    return torch.stack(columns, dim=-1), topk_ids


def _chunked_head(head: torch.nn.Module, batch: RolloutBatch, *, temperature: float, topk: int, with_entropy: bool,
                  chunk_tokens: int, topk_ids_out: list) -> Callable[[torch.Tensor], torch.Tensor]:
    """A stand-in for the output head's forward: ``hidden [batch, seq, hidden_size]`` -> the packed scores
    ``[batch, response_len, columns]`` of ``score_token_chunk`` (its top-k ids go to ``topk_ids_out``)."""

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        rows, response_len = batch.responses.shape
        positions = response_positions(batch).to(hidden.device)
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        flat, targets = picked.reshape(rows * response_len, -1), batch.responses.reshape(-1).to(hidden.device)
        weight, bias = head.weight, head.bias
        # The recomputation only pays off where a backward pass will need the chunk's logits.
        recompute = torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)
        kwargs = dict(temperature=temperature, topk=topk, with_entropy=with_entropy)
        values, ids = [], []
        for start in range(0, flat.shape[0], chunk_tokens):
            args = (flat[start:start + chunk_tokens], weight, bias, targets[start:start + chunk_tokens])
            if recompute:
                chunk_values, chunk_ids = checkpoint(score_token_chunk, *args, use_reentrant=False, **kwargs)
            else:
                chunk_values, chunk_ids = score_token_chunk(*args, **kwargs)
            values.append(chunk_values)
            ids.append(chunk_ids)
        if topk > 0:
            topk_ids_out.append(torch.cat(ids).view(rows, response_len, topk))
        return torch.cat(values).view(rows, response_len, -1)

    return forward


@contextmanager
def _forward_replaced(module: torch.nn.Module, forward: Callable) -> Iterator[None]:
    """``module`` runs ``forward`` instead of its own (hooks around it still run) until the block ends."""
    previous = module.__dict__.get("forward")  # a wrapper someone set on the instance (accelerate's hooks)
    module.forward = forward  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


def output_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's vocabulary projection, which ``score_responses`` replaces for one call; refused where
    the model changes its logits after it (softcapping, scaling), which the chunked scorer would skip."""
    head = model.get_output_embeddings()
    config = getattr(model, "config", None)
    changed = [name for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")
               if getattr(config, name, None) not in (None, 1, 1.0)]
    if not isinstance(head, torch.nn.Linear) or changed:
        raise ValueError(f"{type(model).__name__}: scoring needs a plain linear output head with unchanged "
                         f"logits (head {type(head).__name__}, logit options {changed}); supported: Qwen3, Llama")
    return head


def score_responses(model: torch.nn.Module, batch: RolloutBatch, *, temperature: float, topk: int = 0,
                    with_entropy: bool = False, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> ResponseScores:
    """Log-probs of ``batch.responses`` under ``softmax(logits / temperature)`` (the rollout's distribution
    when it samples without top-k/top-p filtering), optionally entropy and the top-``topk`` tokens.

    ``chunk_tokens`` response tokens are scored at a time (module docstring); the results do not depend on
    it beyond float rounding. Differentiable in ``log_probs`` (and the others) when gradients are on.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens} must be >= 1")
    topk_ids: list[torch.Tensor] = []
    head = output_head(model)
    scorer = _chunked_head(head, batch, temperature=temperature, topk=topk, with_entropy=with_entropy,
                           chunk_tokens=chunk_tokens, topk_ids_out=topk_ids)
    with _forward_replaced(head, scorer):
        packed = model(input_ids=batch.input_ids, use_cache=False).logits  # [batch, response_len, columns]
    out = ResponseScores(log_probs=packed[..., 0])
    if with_entropy:
        out.entropy = packed[..., 1]
    if topk > 0:
        out.topk_ids, out.topk_log_probs = topk_ids[0], packed[..., 1 + with_entropy:]
    return out

"""`RolloutBatch`: one step's samples as padded tensors, and micro-batches by size or token budget.

Layout: each row is prompt then response then padding (right padding only, so plain causal attention
needs no mask and no position shifts). Response-aligned tensors are ``[batch, response_len]``; the
response token ``j`` of row ``i`` sits at ``input_ids[i, prompt_lens[i] + j]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class RolloutBatch:
    """Samples of one step. Optional fields are filled by later stages (old log-probs, advantages...).

    Attributes
    ----------
    input_ids: ``[batch, seq_len]`` long, prompt + response, right-padded with ``pad_id``.
    prompt_lens, response_lens: ``[batch]`` long.
    responses: ``[batch, response_len]`` long, right-padded.
    rollout_log_probs: ``[batch, response_len]`` float32, the engine's log-prob of each sampled token.
    scores: ``[batch]`` float32 rewards.  group_ids: ``[batch]`` long, one id per prompt.
    truncated: ``[batch]`` bool, the response hit the length limit.
    rollout_topk_ids / rollout_topk_log_probs: ``[batch, response_len, k]`` the engine's top-k (id -1 = none).
    old_log_probs, ref_log_probs, is_weights: ``[batch, response_len]`` float32.
    alpha, alpha_upper: ``[batch, response_len]`` float32, lower / upper bound of the per-token acceptance
        rate between rollout and trainer (``trainers.algos.acceptance``), made per micro-batch with the
        trainer's log-probs when both sides have top-k log-probs; ``alpha_est`` the point estimate
        between them.
    rs_mask: ``[batch, response_len]`` float32, 0 where rollout rejection sampling drops a token.
    advantages: ``[batch]`` float32.
    """

    input_ids: torch.Tensor
    prompt_lens: torch.Tensor
    response_lens: torch.Tensor
    responses: torch.Tensor
    rollout_log_probs: torch.Tensor
    scores: torch.Tensor
    group_ids: torch.Tensor
    truncated: torch.Tensor
    rollout_topk_ids: torch.Tensor | None = None
    rollout_topk_log_probs: torch.Tensor | None = None
    old_log_probs: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    alpha_upper: torch.Tensor | None = None
    alpha_est: torch.Tensor | None = None
    rs_mask: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None
    advantages: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_mask(self) -> torch.Tensor:
        """``[batch, response_len]`` float32, 1 on generated tokens."""
        positions = torch.arange(self.responses.shape[1], device=self.responses.device)
        return (positions < self.response_lens.unsqueeze(1)).float()

    @property
    def total_lens(self) -> torch.Tensor:
        return self.prompt_lens + self.response_lens

    def select(self, index: torch.Tensor | Sequence[int]) -> "RolloutBatch":
        """Rows ``index`` of every tensor field (``None`` fields stay ``None``)."""
        index = torch.as_tensor(index, dtype=torch.long)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return RolloutBatch(**{k: (v.index_select(0, index.to(v.device)) if v is not None else None)
                               for k, v in fields.items()})

    def trimmed(self) -> "RolloutBatch":
        """The same rows with padding columns beyond the longest sequence / response cut off."""
        seq_len = int(self.total_lens.max())
        response_len = max(int(self.response_lens.max()), 1)
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value.ndim < 2:
                out[f.name] = value
            else:
                out[f.name] = value[:, :seq_len] if f.name == "input_ids" else value[:, :response_len]
        return RolloutBatch(**out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return RolloutBatch(**{f.name: (getattr(self, f.name).to(device) if getattr(self, f.name) is not None else None)
                               for f in dataclasses.fields(self)})


def build_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                rollout_log_probs: Sequence[Sequence[float]], scores: Sequence[float], group_ids: Sequence[int],
                truncated: Sequence[bool], *, pad_id: int,
                top_logprobs: Sequence[Sequence[dict[int, float]]] | None = None, topk: int = 0) -> RolloutBatch:
    """Pad per-sample lists into a ``RolloutBatch`` (prompt ``i`` pairs with response ``i``).

    ``top_logprobs[i][j]`` maps token ids to log-probs for response token ``j``; kept when ``topk > 0``.
    """
    n = len(prompts)
    if not n or not (len(responses) == len(rollout_log_probs) == len(scores) == len(group_ids) == len(truncated) == n):
        raise ValueError("build_batch needs one response, log-prob list, score, group id and flag per prompt")
    prompt_lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    response_lens = torch.tensor([len(r) for r in responses], dtype=torch.long)
    for i, (r, lp) in enumerate(zip(responses, rollout_log_probs)):
        if len(r) != len(lp):
            raise ValueError(f"sample {i}: {len(r)} response tokens but {len(lp)} log-probs")
    response_len = max(int(response_lens.max()), 1)
    input_ids = torch.full((n, int((prompt_lens + response_lens).max())), pad_id, dtype=torch.long)
    responses_t = torch.full((n, response_len), pad_id, dtype=torch.long)
    log_probs = torch.zeros(n, response_len, dtype=torch.float32)
    for i, (p, r, lp) in enumerate(zip(prompts, responses, rollout_log_probs)):
        input_ids[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r), dtype=torch.long)
        responses_t[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        log_probs[i, : len(r)] = torch.tensor(list(lp), dtype=torch.float32)
    batch = RolloutBatch(
        input_ids=input_ids, prompt_lens=prompt_lens, response_lens=response_lens, responses=responses_t,
        rollout_log_probs=log_probs, scores=torch.tensor(list(scores), dtype=torch.float32),
        group_ids=torch.tensor(list(group_ids), dtype=torch.long), truncated=torch.tensor(list(truncated), dtype=torch.bool),
    )
    if topk > 0 and top_logprobs is not None:
        batch.rollout_topk_ids, batch.rollout_topk_log_probs = _pad_topk(top_logprobs, response_len, topk)
    return batch


def _pad_topk(top_logprobs: Sequence[Sequence[dict[int, float]]], response_len: int, topk: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(top_logprobs), response_len, topk), -1, dtype=torch.long)
    values = torch.full((len(top_logprobs), response_len, topk), -torch.inf, dtype=torch.float32)
    for i, per_token in enumerate(top_logprobs):
        for j, entries in enumerate(per_token or ()):
            items = sorted(entries.items(), key=lambda kv: -kv[1])[:topk]
            if items:
                ids[i, j, : len(items)] = torch.tensor([k for k, _ in items], dtype=torch.long)
                values[i, j, : len(items)] = torch.tensor([v for _, v in items], dtype=torch.float32)
    return ids, values


def micro_batch_indices(total_lens: torch.Tensor, *, max_seqs: int | None = None, max_tokens: int | None = None
                        ) -> list[torch.Tensor]:
    """Split rows into micro-batches of at most ``max_seqs`` rows, or at most ``max_tokens`` padded tokens.

    With ``max_tokens`` rows are taken longest first and packed greedily while ``rows * longest`` stays
    within the budget (padding is what a micro-batch costs). Returns index tensors covering every row once.
    """
    if (max_seqs is None) == (max_tokens is None):
        raise ValueError("pass exactly one of max_seqs and max_tokens")
    n = total_lens.numel()
    if max_seqs is not None:
        if max_seqs < 1:
            raise ValueError(f"max_seqs={max_seqs} must be >= 1")
        return list(torch.arange(n).split(max_seqs))
    longest = int(total_lens.max())
    if longest > max_tokens:
        raise ValueError(f"a {longest}-token sequence exceeds the micro-batch token budget {max_tokens}")
    order = torch.argsort(total_lens, descending=True, stable=True).tolist()
    batches, current, current_max = [], [], 0
    for i in order:
        length = int(total_lens[i])
        if current and (len(current) + 1) * max(current_max, length) > max_tokens:
            batches.append(torch.tensor(current))
            current, current_max = [], 0
        current.append(i)
        current_max = max(current_max, length)
    batches.append(torch.tensor(current))
    return batches

"""Supervised warm-up: teach a tiny random model the answer format before RL (it starts at zero reward)."""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from vortex_rl.data.prompts import Prompt
from vortex_rl.trainers.algos.core_algos import masked_mean
from vortex_rl.trainers.batch import build_batch
from vortex_rl.trainers.config import SFTWarmupConfig
from vortex_rl.trainers.local.logprobs import score_responses
from vortex_rl.trainers.local.model_loader import pad_token_id


def answer_ids(prompt: Prompt, tokenizer: Any) -> list[int]:
    """The target response: ``\\boxed{<answer>}`` then EOS."""
    ids = tokenizer(f"\\boxed{{{prompt.problem.answer}}}", add_special_tokens=False).input_ids
    return list(ids) + [tokenizer.eos_token_id]


def sft_warmup(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Prompt], config: SFTWarmupConfig, *,
               device: torch.device, seed: int, precision=contextlib.nullcontext) -> dict[str, float]:
    """``config.steps`` AdamW steps of next-token cross-entropy on the answers of random training prompts.

    ``precision`` makes the context manager of the forward passes (mixed precision). Returns
    ``sft/loss_first`` and ``sft/loss_last`` (mean over the first / last 10 steps).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    targets = [answer_ids(p, tokenizer) for p in prompts]
    pad_id = pad_token_id(tokenizer)
    losses = []
    for _ in tqdm(range(config.steps), desc="sft warm-up", dynamic_ncols=True):
        rows = torch.randint(len(prompts), (config.batch_size,), generator=generator).tolist()
        batch = build_batch(
            prompts=[prompts[i].token_ids for i in rows], responses=[targets[i] for i in rows],
            rollout_log_probs=[[0.0] * len(targets[i]) for i in rows], scores=[0.0] * len(rows),
            group_ids=list(range(len(rows))), truncated=[False] * len(rows), pad_id=pad_id,
        ).to(device)
        with precision():
            log_probs = score_responses(model, batch, temperature=1.0).log_probs
        loss = -masked_mean(log_probs, batch.response_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if not losses:
        return {}
    return {"sft/loss_first": sum(losses[:10]) / len(losses[:10]), "sft/loss_last": sum(losses[-10:]) / len(losses[-10:])}

"""Sampling one step's responses through the rollout worker, and turning them into a `RolloutBatch`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from vortex_rl.data.prompts import Prompt
from vortex_rl.rollout import Completion, SamplingParams
from vortex_rl.trainers.batch import RolloutBatch, build_batch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.step.protocols import RolloutWorker
from vortex_rl.trainers.step.seeds import derive_seed


@dataclass
class Samples:
    """``completions[i]`` are the samples of ``prompts[i]``."""

    prompts: list[Prompt]
    completions: list[list[Completion]]

    def flat(self) -> list[tuple[int, Prompt, Completion]]:
        """``(group id, prompt, completion)`` per sample, prompt-major."""
        return [(i, p, c) for i, (p, group) in enumerate(zip(self.prompts, self.completions)) for c in group]


def train_sampling_params(config: GRPOConfig, *, seed: int) -> SamplingParams:
    r = config.rollout
    return SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                          max_new_tokens=config.data.max_response_length, seed=seed, logprobs=r.logprobs or None)


def val_sampling_params(config: GRPOConfig, *, seed: int) -> SamplingParams:
    v = config.rollout.val_kwargs
    return SamplingParams(temperature=v.temperature, top_p=v.top_p, top_k=v.top_k,
                          max_new_tokens=config.data.max_response_length, seed=seed)


def per_prompt_params(params: SamplingParams, count: int) -> list[SamplingParams]:
    """One copy of ``params`` per prompt, each with its own seed derived from ``params.seed``.

    The engine derives sample ``j``'s random stream from ``(seed, j)`` only; one shared seed would give
    every prompt the same random numbers, so their samples would be correlated.
    """
    if params.seed is None:
        return [params] * count
    return [dataclasses.replace(params, seed=derive_seed(params.seed, i)) for i in range(count)]


def sample(worker: RolloutWorker, prompts: Sequence[Prompt], params: SamplingParams, n: int) -> Samples:
    """``n`` completions per prompt, every prompt with its own seed (see ``per_prompt_params``)."""
    completions = worker.generate([p.token_ids for p in prompts], per_prompt_params(params, len(prompts)), n)
    return Samples(prompts=list(prompts), completions=completions)


def to_batch(samples: Samples, scores: Sequence[float], *, pad_id: int, topk: int) -> RolloutBatch:
    """Pad the samples (prompt-major, group id = prompt position) with their scores into a batch."""
    flat = samples.flat()
    return build_batch(
        prompts=[p.token_ids for _, p, _ in flat],
        responses=[c.token_ids for _, _, c in flat],
        rollout_log_probs=[c.logprobs for _, _, c in flat],
        scores=scores, group_ids=[g for g, _, _ in flat],
        truncated=[c.finish_reason == "length" for _, _, c in flat],
        pad_id=pad_id, top_logprobs=[c.top_logprobs for _, _, c in flat] if topk else None, topk=topk,
    )


def response_metrics(batch: RolloutBatch) -> dict[str, float]:
    """``response_length/*`` (clip_ratio = share cut at the length limit) and ``prompt_length/mean``."""
    lengths = batch.response_lens.float()
    return {
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/min": lengths.min().item(),
        "response_length/clip_ratio": batch.truncated.float().mean().item(),
        "prompt_length/mean": batch.prompt_lens.float().mean().item(),
    }

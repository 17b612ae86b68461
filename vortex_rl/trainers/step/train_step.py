"""One GRPO step: generate, score, old log-probs, correction, advantages, update, weight sync."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from vortex_rl.data.prompts import Prompt
from vortex_rl.data.sampler import EpochSampler
from vortex_rl.trainers.algos.core_algos import masked_mean
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.step.budget_guard import BudgetGuard
from vortex_rl.trainers.step.advantages import apply_rollout_correction, compute_advantages, select_informative
from vortex_rl.trainers.step.protocols import Learner, RewardScorer, RolloutWorker, WeightSync
from vortex_rl.trainers.step.sampling import Samples, response_metrics, sample, to_batch, train_sampling_params
from vortex_rl.trainers.step.scoring import score_samples
from vortex_rl.trainers.step.seeds import step_seed


@dataclass
class TrainContext:
    """What the steps of a run share (built once by ``run.build.build_run``)."""

    config: GRPOConfig
    learner: Learner
    worker: RolloutWorker
    reward_pool: RewardScorer
    weight_sync: WeightSync
    train_prompts: list[Prompt]
    val_prompts: list[Prompt]
    sampler: EpochSampler
    tokenizer: Any
    pad_id: int
    shutdown: Callable[[], None] = lambda: None  # releases the orchestrator's processes
    guard: BudgetGuard | None = None  # rollout.sparse_guard: the live sparse budget schedule


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def train_step(ctx: TrainContext, step: int) -> dict[str, float]:
    """Run step ``step`` and return its metrics (verl-style names)."""
    config, timings = ctx.config, {}
    with timed(timings, "step"):
        prompts = [ctx.train_prompts[i] for i in ctx.sampler.next_batch()]
        with timed(timings, "gen"):
            samples, engine_metrics = generate(ctx, prompts, seed=step_seed(config.trainer.seed, step, 0))
        with timed(timings, "reward"):
            scores, metrics = score_samples(ctx.reward_pool, samples)
        metrics.update(engine_metrics)
        batch = to_batch(samples, scores, pad_id=ctx.pad_id, topk=config.rollout.logprobs)
        metrics.update(response_metrics(batch))
        with timed(timings, "old_log_prob"):
            ctx.learner.compute_log_probs(batch)
        # the mismatch is measured on the samples as generated, before dynamic sampling duplicates groups
        metrics.update(apply_rollout_correction(batch, config.algorithm.rollout_correction))
        if ctx.guard is not None:  # the engines take a changed schedule for the next step's rollouts
            metrics.update(ctx.guard.observe(batch, ctx.worker))
        metrics["actor/entropy"] = masked_mean(batch.entropy, batch.response_mask).item()
        generator = torch.Generator().manual_seed(step_seed(config.trainer.seed, step, 1))
        batch, skip, selection = select_informative(batch, config.algorithm, generator)
        metrics.update(selection)
        metrics.update(compute_advantages(batch, config.algorithm))
        if not skip:  # a batch without learning signal takes no optimizer step (AdamW would still move)
            with timed(timings, "update_actor"):
                metrics.update(ctx.learner.update(batch))
        with timed(timings, "update_weights"):
            metrics.update(ctx.weight_sync())
    metrics.update({f"timing_s/{name}": seconds for name, seconds in timings.items()})
    metrics["perf/throughput"] = float(batch.total_lens.sum()) / timings["step"]
    return metrics


def generate(ctx: TrainContext, prompts: list[Prompt], *, seed: int) -> tuple[Samples, dict[str, float]]:
    """Sample ``rollout.n`` responses per prompt (the engine sleeps afterwards with ``free_cache_engine``);
    also the engine's ``perf/rollout_tokens_per_s`` and ``rollout/preemptions`` of this generation."""
    config = ctx.config
    ctx.worker.wake()
    before = ctx.worker.stats()
    samples = sample(ctx.worker, prompts, train_sampling_params(config, seed=seed), config.rollout.n)
    after = ctx.worker.stats()
    if config.rollout.free_cache_engine:
        ctx.worker.sleep()
    seconds = after["elapsed_s"] - before["elapsed_s"]
    tokens = after["generated_tokens"] - before["generated_tokens"]
    return samples, {"perf/rollout_tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
                     "rollout/preemptions": float(after["preemptions"] - before["preemptions"])}

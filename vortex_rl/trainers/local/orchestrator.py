"""``trainer.orchestrator=local``: the learner and one rollout engine in this process, behind the same
``RunParts`` the Ray orchestrator builds."""

from __future__ import annotations

from typing import Any

from vortex_rl.data.prompts import Prompt
from vortex_rl.data.reward_pool import RewardPool
from vortex_rl.devices import resolve_device
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.learner import LocalLearner
from vortex_rl.trainers.local.model_loader import autocast, load_actor
from vortex_rl.trainers.local.rollout_worker import LocalRolloutWorker
from vortex_rl.trainers.local.warmup import sft_warmup
from vortex_rl.trainers.local.weight_sync import LocalWeightSync
from vortex_rl.trainers.step.protocols import RunParts


def start_local(config: GRPOConfig, tokenizer: Any, *, model_dir: str | None,
                warmup_prompts: list[Prompt] | None) -> RunParts:
    """The actor (from ``model_dir`` when resuming, else ``model.path``, warmed up on ``warmup_prompts``
    when given), its learner, an engine holding the same weights, and the reward workers."""
    device = resolve_device(config.trainer.device, "trainer.device")
    model = load_actor(config.model, tokenizer, device=device, seed=config.trainer.seed, checkpoint_dir=model_dir)
    metrics: dict[str, float] = {}
    if warmup_prompts is not None:
        metrics.update(sft_warmup(model, tokenizer, warmup_prompts, config.sft_warmup, device=device,
                                  seed=config.trainer.seed, precision=lambda: autocast(config.model, device)))
    learner = LocalLearner(model, config, device)
    worker = LocalRolloutWorker(model, tokenizer, config, device)
    pool = RewardPool(config.reward.fn, num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s)
    return RunParts(learner=learner, worker=worker, reward_pool=pool, weight_sync=LocalWeightSync(learner, worker),
                    metrics=metrics)

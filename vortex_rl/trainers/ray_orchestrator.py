"""``trainer.orchestrator=ray``: the run's actors (learner ranks, rollout workers, reward workers) in
placement groups, wired into the same ``TrainContext`` the local loop uses.

The trainer process (the single controller) holds only the tokenizer, the prompts and the data
sampler; the actor's weights live in the learner ranks and go from there to the engines
(``RayWeightSync``). Actors are named ``vortex-rl-<id>/<role>-<index>`` in the Ray namespace.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vortex_rl.data.reward_pool import RewardPool
from vortex_rl.data.sampler import EpochSampler
from vortex_rl.trainers.checkpoint import restore_training_state
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.models import load_tokenizer
from vortex_rl.trainers.placement import Placement, ResourcePlan, wants_gpu
from vortex_rl.trainers.ray_cluster import import_ray, init_ray
from vortex_rl.trainers.ray_learner import RayLearnerGroup
from vortex_rl.trainers.ray_reward import RayRewardPool
from vortex_rl.trainers.ray_rollout import RayRolloutGroup
from vortex_rl.trainers.setup import load_prompts
from vortex_rl.trainers.step import TrainContext
from vortex_rl.trainers.weight_sync import RayWeightSync


class RayRun:
    """The Ray resources of one run; ``close`` kills its actors, frees its placement groups and, when this
    run started Ray, shuts it down."""

    def __init__(self, started_ray: bool) -> None:
        self.started_ray = started_ray
        self.parts: list[Any] = []  # closed in reverse order

    def add(self, part: Any) -> Any:
        self.parts.append(part)
        return part

    def close(self) -> None:
        ray = import_ray()
        for part in reversed(self.parts):
            part.close()
        self.parts = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()


def resource_plan(config: GRPOConfig, cluster: dict[str, float]) -> ResourcePlan:
    trainer = config.trainer
    return ResourcePlan(placement=trainer.placement, num_learner_ranks=trainer.num_learner_ranks,
                        num_rollout_workers=trainer.num_rollout_workers, num_reward_workers=config.reward.num_workers,
                        cpus_per_worker=trainer.num_cpus_per_worker, use_gpu=wants_gpu(trainer.device, cluster))


def build_ray(config: GRPOConfig, checkpoint: Path | None) -> tuple[TrainContext, int, dict]:
    """Start (or join) Ray, place and set up the actors, restore ``checkpoint`` and sync the engines.

    Returns ``(context, start step, step-0 metrics)``; ``context.shutdown()`` releases everything.
    """
    trainer = config.trainer
    run = RayRun(init_ray(trainer.ray_address, dashboard_host=trainer.ray_dashboard_host))
    try:
        ctx, start_step, metrics = _build(config, checkpoint, run)
    except BaseException:
        run.close()
        raise
    ctx.shutdown = run.close
    return ctx, start_step, metrics


def _build(config: GRPOConfig, checkpoint: Path | None, run: RayRun) -> tuple[TrainContext, int, dict]:
    ray = import_ray()
    model_dir = str(checkpoint / "model") if checkpoint else None
    tokenizer = load_tokenizer(config.model, checkpoint_dir=model_dir)
    train_prompts, val_prompts, metrics = load_prompts(config, tokenizer)
    plan = resource_plan(config, ray.cluster_resources())
    placement = run.add(Placement(plan))
    prefix = f"vortex-rl-{uuid.uuid4().hex[:8]}/"
    warmup = train_prompts if checkpoint is None and config.sft_warmup.steps else None
    rollouts = run.add(RayRolloutGroup(config, placement, name_prefix=prefix, checkpoint_dir=model_dir,
                                       max_restarts=config.trainer.max_rollout_restarts))  # start in the background
    learners = run.add(RayLearnerGroup(config, placement, name_prefix=prefix, checkpoint_dir=model_dir,
                                       warmup_prompts=warmup))
    metrics.update(learners.setup_metrics)
    sampler = EpochSampler(len(train_prompts), config.data.train_batch_size, seed=config.trainer.seed,
                           shuffle=config.data.shuffle)
    start_step = 0
    if checkpoint is not None:
        start_step = restore_training_state(checkpoint, learner=learners, sampler=sampler)
        tqdm.write(f"resuming from {checkpoint} (step {start_step})")
    sync = RayWeightSync(learners, rollouts, placement=plan.placement, use_gpu=plan.use_gpu,
                         bucket_bytes=config.rollout.update_weights_bucket_mb * 2**20)
    sync()  # the engines start from the learner's weights (warmed up or restored), checked
    reward = config.reward
    if reward.num_workers:
        pool = RayRewardPool(reward.fn, num_workers=reward.num_workers, timeout_s=reward.timeout_s,
                             num_cpus=plan.cpus_per_worker, name_prefix=prefix)
    else:
        pool = RewardPool(reward.fn, num_workers=0, timeout_s=reward.timeout_s)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = TrainContext(config=config, learner=learners, worker=rollouts, reward_pool=pool, train_prompts=train_prompts,
                       val_prompts=val_prompts, sampler=sampler, tokenizer=tokenizer, pad_id=pad_id, weight_sync=sync)
    return ctx, start_step, metrics

"""``trainer.orchestrator=ray``: the run's actors (learner ranks, rollout workers, reward workers) in
placement groups, behind the same ``RunParts`` the local orchestrator builds (``run.build`` assembles
either into a ``TrainContext``).

The trainer process (the single controller) holds only the tokenizer, the prompts and the data
sampler; the actor's weights live in the learner ranks and go from there to the engines
(``RayWeightSync``). Actors are named ``vortex-rl-<id>/<role>-<index>`` in the Ray namespace.
"""

from __future__ import annotations

import uuid
from typing import Any

from vortex_rl.data.prompts import Prompt
from vortex_rl.data.reward_pool import RewardPool
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.ray.cluster import import_ray, init_ray, shutdown_ray
from vortex_rl.trainers.ray.learner_group import RayLearnerGroup
from vortex_rl.trainers.ray.placement import Placement, ResourcePlan, wants_gpu
from vortex_rl.trainers.ray.reward_pool import RayRewardPool
from vortex_rl.trainers.ray.rollout_group import RayRolloutGroup
from vortex_rl.trainers.ray.weight_sync import RayWeightSync
from vortex_rl.trainers.step.protocols import RunParts


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
            shutdown_ray()  # and its session directory


def resource_plan(config: GRPOConfig, cluster: dict[str, float]) -> ResourcePlan:
    layout = config.cluster
    return ResourcePlan(placement=layout.placement, num_learner_ranks=layout.num_learner_ranks,
                        num_rollout_workers=layout.num_rollout_workers, num_reward_workers=config.reward.num_workers,
                        cpus_per_worker=layout.num_cpus_per_worker, use_gpu=wants_gpu(config.trainer.device, cluster))


def start_ray(config: GRPOConfig, *, model_dir: str | None, warmup_prompts: list[Prompt] | None) -> RunParts:
    """Start (or join) Ray, then place and set up the actors: learner ranks (warmed up on ``warmup_prompts``
    when given, or loaded from ``model_dir``), rollout workers and reward workers. ``close`` releases them
    all (and Ray, when this call started it)."""
    layout = config.cluster
    run = RayRun(init_ray(layout.ray_address, dashboard_host=layout.ray_dashboard_host))
    try:
        parts = _start_actors(config, run, model_dir=model_dir, warmup_prompts=warmup_prompts)
    except BaseException:
        run.close()
        raise
    parts.close = run.close
    return parts


def _start_actors(config: GRPOConfig, run: RayRun, *, model_dir: str | None, warmup_prompts: list[Prompt] | None
                  ) -> RunParts:
    ray = import_ray()
    plan = resource_plan(config, ray.cluster_resources())
    placement = run.add(Placement(plan))
    prefix = f"vortex-rl-{uuid.uuid4().hex[:8]}/"
    rollouts = run.add(RayRolloutGroup(config, placement, name_prefix=prefix, checkpoint_dir=model_dir,
                                       max_restarts=config.cluster.max_rollout_restarts))  # start in the background
    learners = run.add(RayLearnerGroup(config, placement, name_prefix=prefix, checkpoint_dir=model_dir,
                                       warmup_prompts=warmup_prompts))
    sync = RayWeightSync(learners, rollouts, placement=plan.placement, use_gpu=plan.use_gpu,
                         bucket_bytes=config.rollout.update_weights_bucket_mb * 2**20)
    reward = config.reward
    if reward.num_workers:
        pool = RayRewardPool(reward.fn, num_workers=reward.num_workers, timeout_s=reward.timeout_s,
                             num_cpus=plan.cpus_per_worker, name_prefix=prefix)
    else:
        pool = RewardPool(reward.fn, num_workers=0, timeout_s=reward.timeout_s)
    return RunParts(learner=learners, worker=rollouts, reward_pool=pool, weight_sync=sync,
                    metrics=dict(learners.setup_metrics))

"""`RayRolloutGroup`: rollout workers as Ray actors, behind the ``RolloutWorker`` protocol.

Prompts (with their per-prompt sampling params) are split into contiguous shards, one per worker.
Every request carries its own seed and the engine draws sample ``j``'s tokens from a stream keyed by
``(seed, j)`` alone, so the samples do not depend on how prompts are sharded. A worker that dies is
restarted by Ray (``max_restarts``); the group waits for it, has the learner's weights synced into it
again (``on_restart``) and re-generates its shard, so a step sees the same samples as without the
failure.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import torch

from vortex_rl.rollout import Completion, SamplingParams, weight_buckets
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.ray.placement import Placement
from vortex_rl.trainers.ray.cluster import import_ray
from vortex_rl.trainers.ray.rollout_actor import CONCURRENCY_GROUPS, RolloutActor


class RolloutFailure(RuntimeError):
    """A rollout worker kept dying after its restarts ran out."""


def shard(items: Sequence, num_shards: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``num_shards`` contiguous shards whose sizes differ by at most one."""
    base, extra = divmod(len(items), num_shards)
    bounds, start = [], 0
    for i in range(num_shards):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class RayRolloutGroup:
    """``cluster.num_rollout_workers`` ``RolloutActor``\\ s in ``placement``.

    Parameters
    ----------
    config: the run's config.
    placement: the reserved placement groups.
    name_prefix: prefix of the actors' names (``<prefix>rollout-<i>``).
    checkpoint_dir: a saved ``model/`` directory (resuming), else ``None``.
    max_restarts: how often Ray restarts each worker.
    restart_timeout_s: how long to wait for a restarted worker to come back.
    """

    def __init__(self, config: GRPOConfig, placement: Placement, *, name_prefix: str, checkpoint_dir: str | None,
                 max_restarts: int, restart_timeout_s: float = 300.0) -> None:
        ray = import_ray()
        plan = placement.plan
        remote = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(RolloutActor)
        self.actors = [
            remote.options(name=f"{name_prefix}rollout-{i}", max_restarts=max_restarts, max_task_retries=0,
                           **placement.options("rollout", i))
            .remote(config, i, use_gpu=plan.use_gpu, num_threads=max(1, int(plan.cpus_per_worker)),
                    checkpoint_dir=checkpoint_dir)
            for i in range(plan.num_rollout_workers)
        ]
        self.bucket_bytes = config.rollout.update_weights_bucket_mb * 2**20
        self.restart_timeout_s = restart_timeout_s
        self.restarts = 0
        self.on_restart: Callable[[], None] | None = None  # set by the weight sync: resend the learner's weights
        self._dtype: torch.dtype | None = None  # asked on first use: creating the group does not wait for the actors
        self._budget_schedule: tuple | None = None  # the budget guard's latest, given again to a restarted worker

    # ------------------------------------------------------------------------------------ plumbing
    def call_all(self, method: str, *args) -> list:
        """``method`` on every worker, results in worker order; a dead worker raises ``RolloutFailure``."""
        ray = import_ray()
        try:
            return ray.get([getattr(actor, method).remote(*args) for actor in self.actors])
        except ray.exceptions.RayActorError as err:
            raise RolloutFailure(f"a rollout worker died during {method}: {err}") from err

    def wait_restarted(self, indices: Iterable[int]) -> None:
        """Block until the workers ``indices`` answer again (Ray restarts them), counting the restarts."""
        ray = import_ray()
        for i in indices:
            deadline = time.monotonic() + self.restart_timeout_s
            while True:
                try:
                    ray.get(self.actors[i].pid.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                    break
                except ray.exceptions.ActorUnavailableError:  # still restarting
                    if time.monotonic() > deadline:
                        raise RolloutFailure(f"rollout worker {i} did not come back within "
                                             f"{self.restart_timeout_s:.0f}s of dying") from None
                    time.sleep(0.2)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                    raise RolloutFailure(f"rollout worker {i} did not come back after dying (restarts exhausted "
                                         f"or no resources within {self.restart_timeout_s:.0f}s): {err}") from err
            self.restarts += 1
            if self._budget_schedule is not None:
                ray.get(self.actors[i].set_budget_schedule.remote(*self._budget_schedule))

    # ------------------------------------------------------------------- the RolloutWorker protocol
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                 n: int) -> list[list[Completion]]:
        """``n`` completions per prompt (``params[i]`` samples prompt ``i``, or one ``params`` for all), prompts
        sharded over the workers; failed shards are re-generated."""
        ray = import_ray()
        if not isinstance(params, SamplingParams) and len(params) != len(prompts):
            raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts; give one per prompt")
        shards = {i: (a, b) for i, (a, b) in enumerate(shard(prompts, len(self.actors))) if b > a}

        def submit(i: int):
            a, b = shards[i]
            part = params if isinstance(params, SamplingParams) else list(params[a:b])
            return self.actors[i].generate.remote(list(prompts[a:b]), part, n)

        pending = {i: submit(i) for i in shards}
        results: dict[int, list[list[Completion]]] = {}
        while pending:
            failed = []
            for i, ref in pending.items():
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    failed.append(i)
            if failed:  # every other shard is done: the engines are idle while weights are resent
                self.wait_restarted(failed)
                if self.on_restart is not None:
                    self.on_restart()
            pending = {i: submit(i) for i in failed}
        return [group for i in sorted(results) for group in results[i]]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Weights held by this process, bucket by bucket through the object store (the learner's own path
        is ``RayWeightSync``)."""
        ray = import_ray()
        for bucket in weight_buckets(named_tensors, self.bucket_bytes):
            ref = ray.put([(name, tensor.detach().cpu()) for name, tensor in bucket])
            self.call_all("update_weights", ref)

    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None:
        self._budget_schedule = (budget_schedule, budget_pages)
        self.call_all("set_budget_schedule", budget_schedule, budget_pages)

    def weights_checksums(self) -> list[float]:
        return self.call_all("weights_checksum")

    def weights_checksum(self) -> float:
        """The engines' common weight checksum; raises if the workers hold different weights."""
        values = self.weights_checksums()
        if max(values) != min(values):
            raise RuntimeError(f"rollout workers hold different weights: checksums {values}")
        return values[0]

    @property
    def dtype(self) -> torch.dtype:
        if self._dtype is None:
            self._dtype = self.call_all("dtype")[0]
        return self._dtype

    def sleep(self) -> None:
        self.call_all("sleep")

    def wake(self) -> None:
        self.call_all("wake")

    def stats(self) -> dict[str, float]:
        """Engine counters summed over the workers."""
        total: dict[str, float] = {}
        for stats in self.call_all("stats"):
            for key, value in stats.items():
                total[key] = total.get(key, 0.0) + float(value)
        return total

    def pids(self) -> list[int]:
        return self.call_all("pid")

    def close(self) -> None:
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

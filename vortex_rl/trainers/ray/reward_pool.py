"""`RayRewardPool`: ``RewardPool``'s interface over reward-worker Ray actors.

Each actor scores its share of the answers in its main thread, every answer under ``SIGALRM``
(``score_with_timeout``). A share that does not come back within ``timeout_s`` per answer plus
``grace_s`` (a reward stuck in C code that ignores the alarm) is counted as time-outs and its actor
is killed and restarted by Ray; an actor that dies is restarted and its share counted as errors.
"""

from __future__ import annotations

from typing import Sequence

from vortex_rl.data.reward_pool import RewardPool, RewardResult
from vortex_rl.trainers.ray.cluster import import_ray
from vortex_rl.trainers.ray.rollout_group import shard


class RewardActor:
    """Scores answers in this actor's process (``RewardPool(num_workers=0)``)."""

    def __init__(self, reward: str, timeout_s: float) -> None:
        self.pool = RewardPool(reward, num_workers=0, timeout_s=timeout_s)
        self.pool.score(["\\boxed{1}"], ["1"])  # import the reward's dependencies before the first timed answer

    def ready(self) -> bool:
        return True

    def score(self, responses: Sequence[str], ground_truths: Sequence[str]) -> RewardResult:
        return self.pool.score(responses, ground_truths)


def merge_results(parts: Sequence[RewardResult]) -> RewardResult:
    """One ``RewardResult`` of consecutive shares, in order."""
    merged = RewardResult(scores=[])
    for part in parts:
        merged.scores.extend(part.scores)
        merged.num_timeouts += part.num_timeouts
        merged.num_errors += part.num_errors
        merged.errors.extend(part.errors[: max(0, 5 - len(merged.errors))])
    return merged


class RayRewardPool:
    """Score ``(response, ground_truth)`` pairs with a registered reward on ``num_workers`` actors.

    Parameters
    ----------
    reward: a registered reward name (``vortex_rl.data.REWARDS``).
    num_workers: reward actors (``reward.num_workers``, at least 1).
    timeout_s: time limit per answer.
    num_cpus: CPU request of each actor.
    grace_s: extra seconds before an unresponsive actor is declared stuck.
    """

    def __init__(self, reward: str, *, num_workers: int, timeout_s: float, num_cpus: float = 1.0,
                 grace_s: float = 30.0, name_prefix: str = "") -> None:
        ray = import_ray()
        if num_workers < 1:
            raise ValueError(f"reward.num_workers={num_workers} must be >= 1 for Ray reward workers")
        remote = ray.remote(RewardActor)
        self.actors = [remote.options(name=f"{name_prefix}reward-{i}" if name_prefix else None, num_cpus=num_cpus,
                                      max_restarts=-1, max_task_retries=0).remote(reward, timeout_s)
                       for i in range(num_workers)]
        self.timeout_s, self.grace_s = float(timeout_s), float(grace_s)
        try:  # an unknown reward (or one registered only in this process) fails here, not as zero scores
            ray.get([actor.ready.remote() for actor in self.actors])
        except ray.exceptions.RayActorError as err:
            self.close()
            raise RuntimeError(f"reward workers failed to start with reward.fn={reward!r}: {err}") from err

    def score(self, responses: Sequence[str], ground_truths: Sequence[str]) -> RewardResult:
        """Scores in input order; time-outs and failures score 0 and are counted."""
        ray = import_ray()
        if len(responses) != len(ground_truths):
            raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
        bounds = [b for b in shard(responses, len(self.actors)) if b[1] > b[0]]
        refs = [self.actors[i].score.remote(list(responses[a:b]), list(ground_truths[a:b]))
                for i, (a, b) in enumerate(bounds)]
        longest = max((b - a for a, b in bounds), default=0)
        ray.wait(refs, num_returns=len(refs), timeout=longest * self.timeout_s + self.grace_s)
        return merge_results([self._collect(i, ref, b - a) for i, (ref, (a, b)) in enumerate(zip(refs, bounds))])

    def _collect(self, index: int, ref, count: int) -> RewardResult:
        ray = import_ray()
        try:
            return ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actors[index], no_restart=False)  # stuck past its alarms: Ray restarts it
            return RewardResult(scores=[0.0] * count, num_timeouts=count, errors=["reward worker stuck; restarted"])
        except ray.exceptions.RayActorError as err:
            return RewardResult(scores=[0.0] * count, num_errors=count, errors=[f"reward worker died: {err}"[:300]])

    def close(self) -> None:
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

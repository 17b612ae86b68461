"""`RayWeightSync`: after each step, the learner's weights go straight from the learner ranks into every
rollout engine, and checksums prove they arrived.

The transport follows the placement (``transport_for``): colocated ranks hand each bucket to the
rollout worker on their device (a CUDA IPC handle on GPU, the object store on CPU); disaggregated
pools use a broadcast from learner rank 0 (NCCL on GPU, gloo on CPU). Each learner rank sums what it
sent (float64, in the engine's dtype); each engine sums what it holds (``Engine.state_checksum``).
"""

from __future__ import annotations

from vortex_rl.trainers.ray.cluster import import_ray
from vortex_rl.trainers.ray.learner_group import RayLearnerGroup
from vortex_rl.trainers.ray.rollout_group import RayRolloutGroup, RolloutFailure
from vortex_rl.trainers.distributed.weight_transport import WeightLayout
from vortex_rl.trainers.step.weight_check import compare_checksums

TRANSPORTS = {("colocated", True): "cuda_ipc", ("colocated", False): "object_store",
              ("disaggregated", True): "nccl", ("disaggregated", False): "gloo"}


def transport_for(placement: str, use_gpu: bool) -> str:
    return TRANSPORTS[(placement, use_gpu)]


class RayWeightSync:
    """Call it after each update: sends, checks, returns ``rollout/*`` metrics.

    Parameters
    ----------
    learners, rollouts: the two actor groups; ``rollouts.on_restart`` is pointed at ``resend``.
    placement: ``colocated`` (learner rank ``i`` feeds rollout worker ``i``) or ``disaggregated``.
    use_gpu: the actors hold GPUs.
    bucket_bytes: size of a transfer bucket.
    """

    def __init__(self, learners: RayLearnerGroup, rollouts: RayRolloutGroup, *, placement: str, use_gpu: bool,
                 bucket_bytes: int) -> None:
        self.learners, self.rollouts = learners, rollouts
        self.transport = transport_for(placement, use_gpu)
        self.layout = WeightLayout.plan(learners.weight_shapes(), dtype=rollouts.dtype, bucket_bytes=bucket_bytes)
        self.generation = 0
        self.address: tuple[str, int] | None = None
        if self.transport in ("gloo", "nccl"):
            world = 1 + len(rollouts.actors)
            self.address = learners.gather([learners.actors[0].open_broadcast.remote(world)], "open_broadcast")[0]
            self._join_broadcast()
        rollouts.on_restart = self.after_restart

    def __call__(self) -> dict[str, float]:
        relative = self.resend()
        return {"rollout/weights_checksum_rel_diff": relative, "rollout/worker_restarts": float(self.rollouts.restarts)}

    def after_restart(self) -> None:
        """A rollout worker came back with its initial weights (and no broadcast group): resend."""
        if self.address is not None:
            self._join_broadcast()
        self.resend()

    def resend(self) -> float:
        """Send every weight to every engine and compare checksums; a rollout worker that dies meanwhile is
        waited for and the transfer repeated. Returns the largest relative checksum difference."""
        for _ in range(len(self.rollouts.actors) * 8 + 1):
            sent, failed = self._send()
            if not failed:
                return compare_checksums(sent, self.rollouts.weights_checksums())
            self.rollouts.wait_restarted(failed)
            if self.address is not None:
                self._join_broadcast()
        raise RolloutFailure("rollout workers kept dying during the weight sync")

    def _send(self) -> tuple[list[float], list[int]]:
        """``(checksum sent to each worker, indices of workers that died)``."""
        learners, rollouts = self.learners, self.rollouts
        if self.transport in ("cuda_ipc", "object_store"):
            refs = [a.send_colocated.remote(self.layout, r) for a, r in zip(learners.actors, rollouts.actors)]
            results = learners.gather(refs, "weight sync")
            for i, result in enumerate(results):
                if result["error"] is not None and not result["dead"]:
                    raise RuntimeError(f"rollout worker {i} failed to load weights: {result['error']}")
            failed = [i for i, result in enumerate(results) if result["dead"]]
            return [result["checksum"] for result in results], failed
        sending = learners.submit("send_broadcast", self.layout)
        receiving = [actor.receive_broadcast.remote(self.layout) for actor in rollouts.actors]
        failed = self._wait_broadcast(sending, receiving)
        results = learners.gather(sending, "weight sync")
        if results[0]["error"] is not None and not failed:
            raise RuntimeError(f"weight broadcast failed with every rollout worker alive: {results[0]['error']}")
        return [results[0]["checksum"]] * len(rollouts.actors), failed

    def _wait_broadcast(self, sending: list, receiving: list) -> list[int]:
        """Wait for both ends. A dead learner rank raises ``LearnerFailure`` at once (everyone else would
        wait for it); when a receiver dies the others may wait for buckets that never come, so they are
        killed too (Ray restarts them). Returns the rollout workers to wait for."""
        ray = import_ray()
        receiver = {ref: i for i, ref in enumerate(receiving)}
        pending, dead = [*sending, *receiving], []
        while pending and not dead:
            done, pending = ray.wait(pending, num_returns=1)
            if done[0] not in receiver:
                self.learners.gather(done, "weight sync", ranks=[sending.index(done[0])])
                continue
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError:
                dead.append(receiver[done[0]])
        for ref in pending:
            if ref in receiver:
                ray.kill(self.rollouts.actors[receiver[ref]], no_restart=False)
                dead.append(receiver[ref])
        return sorted(dead)

    def _join_broadcast(self) -> None:
        """(Re)build the broadcast group: learner rank 0 and every rollout worker, a fresh generation."""
        self.generation += 1
        world = 1 + len(self.rollouts.actors)
        source = self.learners.actors[0].join_broadcast.remote(self.generation, world)
        joins = [actor.join_broadcast.remote(self.address, 1 + i, world, self.generation)
                 for i, actor in enumerate(self.rollouts.actors)]
        if self._wait_broadcast([source], joins):  # learner rank 0 would wait for them until the time-out
            raise RolloutFailure("rollout workers died while the weight-sync group formed")

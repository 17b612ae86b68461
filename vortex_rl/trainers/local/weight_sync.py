"""`LocalWeightSync`: after each update, the in-process learner's weights into the in-process engine,
checked by checksum (``step.weight_check``)."""

from __future__ import annotations

from vortex_rl.rollout import weight_checksum
from vortex_rl.trainers.step.protocols import Learner, RolloutWorker
from vortex_rl.trainers.step.weight_check import compare_checksums


class LocalWeightSync:
    """Sends ``learner.named_weights()`` to ``worker`` in buckets, then compares what the engine holds with
    what was sent (cast to the engine's dtype, as the engine stores it)."""

    def __init__(self, learner: Learner, worker: RolloutWorker) -> None:
        self.learner, self.worker = learner, worker

    def __call__(self) -> dict[str, float]:
        self.worker.update_weights(self.learner.named_weights())
        dtype = self.worker.dtype
        sent = weight_checksum(self.learner.named_weights(), dtype=dtype)
        relative = compare_checksums([sent], [self.worker.weights_checksum()])
        return {"rollout/weights_checksum_rel_diff": relative}

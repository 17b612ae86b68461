"""``cluster``: with ``trainer.orchestrator=ray``, the Ray cluster and how the run's actors sit on it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from vortex_rl.trainers.config.checks import check

PLACEMENTS = ("colocated", "disaggregated")


def ray_available() -> bool:
    """Whether ``ray`` is importable (then ``trainer.orchestrator`` defaults to ``ray``)."""
    return importlib.util.find_spec("ray") is not None


@dataclass
class ClusterConfig:
    """The Ray layout of a run (read only with ``trainer.orchestrator=ray``).

    placement: ``colocated`` (learner rank i and rollout worker i share a device; the engine sleeps
        during training with ``rollout.free_cache_engine``) or ``disaggregated`` (separate device
        pools). Weights go over CUDA IPC / the object store (colocated) or an NCCL / gloo broadcast
        from learner rank 0 (disaggregated), in ``rollout.update_weights_bucket_mb`` buckets.
    num_learner_ranks: learner processes, one per GPU (FSDP2 over NCCL; gloo on CPU).
    num_rollout_workers: rollout engines; prompts are sharded over them (colocated: = num_learner_ranks).
    num_cpus_per_worker: CPUs Ray reserves for each learner rank, rollout worker and reward worker.
    max_rollout_restarts: how often Ray restarts a dead rollout worker (its prompts are re-generated).
    ray_address: the Ray cluster to join; ``null`` = ``RAY_ADDRESS``, else start Ray on this machine.
    ray_dashboard_host: where the dashboard of a Ray started here listens (localhost unless set).
    """

    placement: str = "colocated"
    num_learner_ranks: int = 1
    num_rollout_workers: int = 1
    num_cpus_per_worker: float = 1.0
    max_rollout_restarts: int = 3
    ray_address: str | None = None
    ray_dashboard_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        check(self.placement in PLACEMENTS, f"cluster.placement={self.placement!r} must be one of {PLACEMENTS}")
        for name in ("num_learner_ranks", "num_rollout_workers"):
            check(getattr(self, name) >= 1, f"cluster.{name}={getattr(self, name)} must be >= 1")
        check(self.placement != "colocated" or self.num_rollout_workers == self.num_learner_ranks,
              f"cluster.placement=colocated pairs rollout workers with learner ranks: cluster.num_rollout_workers="
              f"{self.num_rollout_workers} must equal cluster.num_learner_ranks={self.num_learner_ranks}")
        check(self.num_cpus_per_worker > 0, f"cluster.num_cpus_per_worker={self.num_cpus_per_worker} must be > 0")
        check(self.max_rollout_restarts >= 0, f"cluster.max_rollout_restarts={self.max_rollout_restarts} must be >= 0")

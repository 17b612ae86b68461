"""Where the Ray actors of a run go: placement groups sized from the config, checked against the cluster.

``colocated``: bundle ``i`` holds learner rank ``i`` and rollout worker ``i`` (one GPU shared, half a
GPU each: the engine sleeps while the learner trains). ``disaggregated``: a learner pool and a rollout
pool of one-GPU bundles. Reward workers are CPU actors outside the placement groups. On CPU the
bundles hold only CPUs (``cluster.num_cpus_per_worker`` per actor, fractions allowed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vortex_rl.trainers.config import PLACEMENTS
from vortex_rl.trainers.ray.cluster import import_ray


def wants_gpu(device: str, cluster: dict[str, float]) -> bool:
    """Whether actors request GPUs: ``trainer.device`` ``cpu`` never, ``cuda[:N]`` always (the cluster must
    have some), ``auto`` when the cluster has any."""
    gpus = cluster.get("GPU", 0.0)
    if device == "cpu":
        return False
    if device.startswith("cuda") and gpus == 0:
        raise RuntimeError(f"trainer.device={device!r} but the Ray cluster has no GPUs (resources: "
                           f"{_describe(cluster)}); use trainer.device=cpu or join GPU nodes")
    return gpus > 0


@dataclass(frozen=True)
class ResourcePlan:
    """The actors of a run and what each asks Ray for."""

    placement: str
    num_learner_ranks: int
    num_rollout_workers: int
    num_reward_workers: int
    cpus_per_worker: float
    use_gpu: bool

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"cluster.placement={self.placement!r} must be one of {PLACEMENTS}")
        if self.placement == "colocated" and self.num_rollout_workers != self.num_learner_ranks:
            raise ValueError(
                f"cluster.placement=colocated pairs each rollout worker with a learner rank on one device, so "
                f"cluster.num_rollout_workers={self.num_rollout_workers} must equal cluster.num_learner_ranks="
                f"{self.num_learner_ranks}; use cluster.placement=disaggregated for separate pools")

    def pools(self) -> dict[str, list[dict[str, float]]]:
        """Bundles per placement group: ``shared`` (colocated) or ``learner`` and ``rollout``."""
        gpu = {"GPU": 1.0} if self.use_gpu else {}
        if self.placement == "colocated":
            return {"shared": [{"CPU": 2 * self.cpus_per_worker, **gpu} for _ in range(self.num_learner_ranks)]}
        return {"learner": [{"CPU": self.cpus_per_worker, **gpu} for _ in range(self.num_learner_ranks)],
                "rollout": [{"CPU": self.cpus_per_worker, **gpu} for _ in range(self.num_rollout_workers)]}

    def required(self) -> dict[str, float]:
        """Total CPUs and GPUs the run asks for (reward workers included)."""
        total = {"CPU": self.num_reward_workers * self.cpus_per_worker, "GPU": 0.0}
        for bundles in self.pools().values():
            for bundle in bundles:
                for key, value in bundle.items():
                    total[key] += value
        return total

    def describe(self) -> str:
        gpus = " and one GPU per device slot" if self.use_gpu else ""
        return (f"cluster.placement={self.placement} with {self.num_learner_ranks} learner rank(s), "
                f"{self.num_rollout_workers} rollout worker(s) and {self.num_reward_workers} reward worker(s) at "
                f"cluster.num_cpus_per_worker={self.cpus_per_worker}{gpus}")


def check_resources(plan: ResourcePlan, cluster: dict[str, float]) -> None:
    """Raise ``RuntimeError`` naming both sides when ``cluster`` (``ray.cluster_resources()``) is too small."""
    needed = plan.required()
    short = [key for key, value in needed.items() if value > cluster.get(key, 0.0) + 1e-9]
    if short:
        asked = ", ".join(f"{k} {v:g}" for k, v in needed.items() if v)
        raise RuntimeError(
            f"the Ray cluster lacks {'/'.join(short)}: {plan.describe()} asks for {asked}, the cluster has "
            f"{_describe(cluster)}. Lower cluster.num_learner_ranks / num_rollout_workers / num_cpus_per_worker "
            f"or reward.num_workers, or add nodes")


def _describe(cluster: dict[str, float]) -> str:
    return ", ".join(f"{k} {cluster.get(k, 0.0):g}" for k in ("CPU", "GPU"))


class Placement:
    """The placement groups of a plan, reserved on the cluster; ``options(role, index)`` places an actor.

    Parameters
    ----------
    plan: what to reserve.
    timeout_s: how long to wait for the cluster to grant the bundles (they may fit in total but not per node).
    """

    def __init__(self, plan: ResourcePlan, *, timeout_s: float = 60.0) -> None:
        ray = import_ray()
        from ray.util.placement_group import placement_group, remove_placement_group

        check_resources(plan, ray.cluster_resources())
        self.plan = plan
        self.groups = {name: placement_group(bundles, strategy="PACK") for name, bundles in plan.pools().items()}
        ready, _ = ray.wait([g.ready() for g in self.groups.values()], num_returns=len(self.groups), timeout=timeout_s)
        if len(ready) < len(self.groups):
            for group in self.groups.values():
                remove_placement_group(group)
            raise RuntimeError(f"the Ray cluster could not place {plan.describe()} within {timeout_s:.0f}s "
                               f"(bundles {plan.pools()}; a bundle must fit on one node)")

    def options(self, role: str, index: int) -> dict[str, Any]:
        """``.options(**...)`` of the ``role`` actor (``learner``, ``rollout``) number ``index``."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        plan = self.plan
        if role not in ("learner", "rollout"):
            raise ValueError(f"role={role!r} must be 'learner' or 'rollout'")
        group = self.groups["shared" if plan.placement == "colocated" else role]
        gpus = (0.5 if plan.placement == "colocated" else 1.0) if plan.use_gpu else 0.0
        strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
        return {"num_cpus": plan.cpus_per_worker, "num_gpus": gpus, "scheduling_strategy": strategy}

    def close(self) -> None:
        """Free the placement groups (their actors must be gone first)."""
        from ray.util.placement_group import remove_placement_group

        for group in self.groups.values():
            remove_placement_group(group)
        self.groups = {}

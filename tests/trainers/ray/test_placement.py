"""Resource plans (hand-counted totals), the errors for clusters that are too small, and placement groups."""

from __future__ import annotations

import pytest

from vortex_rl.trainers.config import ray_available
from vortex_rl.trainers.ray.placement import ResourcePlan, check_resources, wants_gpu


def plan(placement="disaggregated", learners=2, rollouts=3, rewards=1, cpus=0.5, gpu=False) -> ResourcePlan:
    return ResourcePlan(placement, num_learner_ranks=learners, num_rollout_workers=rollouts,
                        num_reward_workers=rewards, cpus_per_worker=cpus, use_gpu=gpu)


def test_disaggregated_pools_and_totals():
    p = plan(gpu=True)
    assert p.pools() == {"learner": [{"CPU": 0.5, "GPU": 1.0}] * 2, "rollout": [{"CPU": 0.5, "GPU": 1.0}] * 3}
    assert p.required() == {"CPU": 0.5 * (2 + 3 + 1), "GPU": 5.0}


def test_colocated_shares_one_gpu_per_pair():
    p = plan("colocated", learners=4, rollouts=4, rewards=2, cpus=1.0, gpu=True)
    assert p.pools() == {"shared": [{"CPU": 2.0, "GPU": 1.0}] * 4}
    assert p.required() == {"CPU": 4 * 2.0 + 2 * 1.0, "GPU": 4.0}


def test_cpu_plans_ask_for_no_gpu():
    assert plan().required()["GPU"] == 0.0


def test_colocated_needs_as_many_rollout_workers_as_learner_ranks():
    with pytest.raises(ValueError, match="num_rollout_workers=3 must equal cluster.num_learner_ranks=2"):
        plan("colocated", learners=2, rollouts=3)


def test_unknown_placement_is_named():
    with pytest.raises(ValueError, match="cluster.placement='spread'"):
        plan("spread")


def test_too_small_cluster_error_names_both_sides():
    with pytest.raises(RuntimeError, match=r"lacks GPU.*asks for CPU 3, GPU 5.*the cluster has CPU 16, GPU 4"):
        check_resources(plan(gpu=True), {"CPU": 16.0, "GPU": 4.0})
    check_resources(plan(gpu=True), {"CPU": 3.0, "GPU": 5.0})  # exactly enough


def test_device_setting_decides_gpus():
    assert wants_gpu("auto", {"CPU": 8.0, "GPU": 2.0}) and not wants_gpu("auto", {"CPU": 8.0})
    assert not wants_gpu("cpu", {"CPU": 8.0, "GPU": 2.0})
    with pytest.raises(RuntimeError, match="trainer.device='cuda' but the Ray cluster has no GPUs"):
        wants_gpu("cuda", {"CPU": 8.0})


def test_placement_groups_on_the_session_cluster(ray_session):
    from vortex_rl.trainers.ray.placement import Placement

    with pytest.raises(RuntimeError, match="lacks CPU"):
        Placement(plan(learners=8, rollouts=8, cpus=1.0))
    placement = Placement(plan("colocated", learners=2, rollouts=2, rewards=0))
    try:
        options = placement.options("rollout", 1)
        assert options["num_cpus"] == 0.5 and options["num_gpus"] == 0.0
        assert options["scheduling_strategy"].placement_group_bundle_index == 1
        assert placement.groups["shared"].bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
        with pytest.raises(ValueError, match="role='critic'"):
            placement.options("critic", 0)
    finally:
        placement.close()


@pytest.mark.parametrize("override, message", [
    ("trainer.orchestrator=mpi", "trainer.orchestrator='mpi' is not available; use 'ray' or 'local'"),
    ("cluster.placement=spread", "cluster.placement='spread' must be one of"),
    ("cluster.num_rollout_workers=3", "cluster.num_rollout_workers=3 must equal cluster.num_learner_ranks=1"),
    ("cluster.num_learner_ranks=0", "cluster.num_learner_ranks=0 must be >= 1"),
    ("cluster.num_cpus_per_worker=0", "cluster.num_cpus_per_worker=0"),
    ("cluster.max_rollout_restarts=-1", "cluster.max_rollout_restarts=-1 must be >= 0"),
])
def test_orchestration_keys_are_checked(override, message):
    from vortex_rl.train import compose_config

    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        compose_config("tiny_cpu", [override])


def test_orchestration_keys_compose():
    from vortex_rl.train import compose_config

    config = compose_config("tiny_cpu", ["cluster.placement=disaggregated", "cluster.num_rollout_workers=3",
                                         "cluster.ray_dashboard_host=0.0.0.0"])
    trainer, cluster = config.trainer, config.cluster
    assert (cluster.placement, cluster.num_learner_ranks, cluster.num_rollout_workers) == ("disaggregated", 1, 3)
    assert trainer.orchestrator == ("ray" if ray_available() else "local")  # the default follows the install
    assert cluster.ray_dashboard_host == "0.0.0.0" and cluster.ray_address is None

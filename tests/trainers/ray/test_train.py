"""``train`` on Ray end to end against the local orchestrator: ``tiny_cpu`` (shrunk) with 2 learner ranks
(FSDP2 over gloo) and 2 rollout workers logs the local run's metrics, colocated and disaggregated, with
engine checksums matching the learner after every step; a learner rank killed mid-run stops the run
with its last checkpoint complete, and ``trainer.resume=auto`` finishes it with the same metrics."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.trainers.ray.helpers import digit_share_reward, ray_overrides, read_metrics, tiny_overrides
from vortex_rl.train import compose_config
from vortex_rl.trainers.run.checkpoint import latest_checkpoint, load_checkpoint
from vortex_rl.trainers.run.loop import train

pytest.importorskip("ray")

STEPS = 3
NOT_COMPARED = ("timing_s/", "perf/")  # wall-clock figures


def run(tmp: Path, overrides: list[str]) -> dict[int, dict[str, float]]:
    with digit_share_reward():
        config = compose_config("tiny_cpu", overrides + [f"trainer.total_steps={STEPS}", f"trainer.output_dir={tmp}"])
        train(config, tmp)
    return read_metrics(tmp)


@pytest.fixture(scope="module")
def local_metrics(tmp_path_factory) -> dict[int, dict[str, float]]:
    return run(tmp_path_factory.mktemp("local"), tiny_overrides(**{"trainer.orchestrator": "local"}))


def assert_same_metrics(got: dict[int, dict], want: dict[int, dict]) -> None:
    """Every metric the local run logged, at every step, within float32 summation-order tolerance."""
    assert sorted(got) == sorted(want) == list(range(STEPS + 1))
    compared = 0
    for step, row in want.items():
        for key, value in row.items():
            if key.startswith(NOT_COMPARED):
                continue
            assert key in got[step], f"step {step}: {key} missing"
            assert got[step][key] == pytest.approx(value, rel=1e-4, abs=1e-5), f"step {step}: {key}"
            compared += 1
    assert compared > 30 * STEPS  # rewards, lengths, log-prob mismatch, losses, gradient norms...
    assert any(row["actor/grad_norm"] > 0 for step, row in want.items() if step), "the updates must be non-trivial"


def assert_engines_in_sync(got: dict[int, dict]) -> None:
    for step in range(1, STEPS + 1):
        assert got[step]["rollout/weights_checksum_rel_diff"] <= 1e-6
        assert got[step]["timing_s/update_weights"] > 0


def test_colocated_ray_run_matches_local(ray_session, local_metrics, tmp_path):
    got = run(tmp_path, ray_overrides("colocated"))
    assert_same_metrics(got, local_metrics)
    assert_engines_in_sync(got)
    assert all(got[step]["rollout/worker_restarts"] == 0 for step in range(1, STEPS + 1))


def kill_learner_after_step(run_dir: Path, step: int, rank: int, killed: threading.Event) -> None:
    """SIGKILL learner rank ``rank``'s process once ``step`` is in the run's metrics."""
    import ray

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.is_file() and step in read_metrics(run_dir):
            names = [n for n in ray.util.list_named_actors()
                     if n.startswith("vortex-rl-") and n.endswith(f"learner-{rank}")]
            os.kill(ray.get(ray.get_actor(names[0]).pid.remote()), signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)


def test_disaggregated_run_survives_a_learner_kill_through_resume(ray_session, local_metrics, tmp_path):
    from vortex_rl.trainers.ray.learner_group import LearnerFailure

    import ray

    overrides = ray_overrides("disaggregated", **{"trainer.save_freq": 1})
    killed = threading.Event()
    killer = threading.Thread(target=kill_learner_after_step, args=(tmp_path, 2, 1, killed))
    killer.start()
    with pytest.raises(LearnerFailure, match="learner rank 1 died.*trainer.resume=auto"):
        run(tmp_path, overrides)
    killer.join()
    assert killed.is_set()
    assert not [n for n in ray.util.list_named_actors() if n.startswith("vortex-rl-")], "the run left actors behind"
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.name in ("global_step_1", "global_step_2")
    trainer_state, learner_state = load_checkpoint(checkpoint)
    assert int(trainer_state["step"]) == int(checkpoint.name.rsplit("_", 1)[1])
    assert len(learner_state["optimizer"]["state"]) > 0
    got = run(tmp_path, overrides + ["trainer.resume=auto"])
    assert_same_metrics(got, local_metrics)
    assert_engines_in_sync(got)

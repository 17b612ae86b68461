"""``trainer``: the loop (steps, validation, checkpoints, logging), where it runs and how it is orchestrated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from vortex_rl.devices import check_device_name
from vortex_rl.trainers.config.checks import check
from vortex_rl.trainers.config.cluster import ray_available

ORCHESTRATORS = ("ray", "local")
LOGGERS = ("console", "wandb")


@dataclass
class TrainerConfig:
    """The loop.

    total_steps: training steps (each: rollout, reward, update, weight sync).
    test_freq: validate every N steps (and at the end); <= 0 = never.
    val_before_train: validate once before the first step.
    save_freq: checkpoint every N steps (and at the end); <= 0 = only at the end.
    output_dir: run directory; ``null`` = ``runs/<recipe>/<timestamp>`` under the working directory.
    resume: ``disable``; ``auto`` = the latest checkpoint of ``output_dir`` (or, when ``output_dir`` is
        null, of the newest run of this recipe); or a checkpoint directory.
    max_ckpt_to_keep: delete older checkpoints beyond this many (``null`` = keep all).
    seed: seeds model init, data order and sampling.
    logger: any of ``console``, ``wandb`` (metrics.jsonl and plots are always written).
    project_name / experiment_name: W&B names (``experiment_name: null`` = the run directory name).
    orchestrator: ``ray`` (the default when Ray is installed): learner ranks, rollout workers and reward
        workers are Ray actors laid out by the ``cluster`` section; ``local``: the learner and one engine
        in this process (no Ray needed).
    device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    total_steps: int = 100
    test_freq: int = 10
    val_before_train: bool = True
    save_freq: int = 50
    output_dir: str | None = None
    resume: str = "disable"
    max_ckpt_to_keep: int | None = None
    seed: int = 1
    logger: list[str] = field(default_factory=lambda: list(LOGGERS))
    project_name: str = "vortex-rl"
    experiment_name: str | None = None
    orchestrator: str = field(default_factory=lambda: "ray" if ray_available() else "local")
    device: str = "auto"

    # The Ray layout moved to its own section; old recipes and command lines are told where.
    MOVED_KEYS: ClassVar[dict[str, str]] = {name: f"cluster.{name}" for name in (
        "placement", "num_learner_ranks", "num_rollout_workers", "num_cpus_per_worker", "max_rollout_restarts",
        "ray_address", "ray_dashboard_host")}

    def __post_init__(self) -> None:
        check(self.total_steps >= 1, f"trainer.total_steps={self.total_steps} must be >= 1")
        unknown = sorted(set(self.logger) - set(LOGGERS))
        check(not unknown, f"trainer.logger has unknown backends {unknown}; use any of {list(LOGGERS)}")
        check(self.orchestrator in ORCHESTRATORS,
              f"trainer.orchestrator={self.orchestrator!r} is not available; use 'ray' or 'local'")
        check(self.orchestrator == "local" or ray_available(), "trainer.orchestrator=ray but ray is not installed: "
              "pip install 'vortex-rl[train]', or use trainer.orchestrator=local")
        check_device_name(self.device, "trainer.device")
        check(self.max_ckpt_to_keep is None or self.max_ckpt_to_keep >= 1,
              f"trainer.max_ckpt_to_keep={self.max_ckpt_to_keep} must be >= 1 or null")

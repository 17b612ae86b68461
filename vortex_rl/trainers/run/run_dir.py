"""A run's directory and the checkpoint it continues from."""

from __future__ import annotations

import time
from pathlib import Path

from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.run.checkpoint import latest_checkpoint


def resolve_run_dir(config: GRPOConfig, cwd: Path) -> Path:
    """``trainer.output_dir``; else, with ``resume=auto``, the newest ``runs/<recipe>/*`` holding a
    checkpoint; else a new ``runs/<recipe>/<timestamp>``."""
    if config.trainer.output_dir:
        return Path(config.trainer.output_dir).expanduser().resolve()
    recipe_runs = Path(cwd) / "runs" / (config.recipe or "custom")
    if config.trainer.resume == "auto" and recipe_runs.is_dir():
        with_checkpoints = [d for d in recipe_runs.iterdir() if d.is_dir() and latest_checkpoint(d) is not None]
        if with_checkpoints:
            return max(with_checkpoints, key=lambda d: d.stat().st_mtime)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = recipe_runs / stamp
    suffix = 1
    while run_dir.exists():  # two runs started in the same second
        run_dir, suffix = recipe_runs / f"{stamp}-{suffix}", suffix + 1
    return run_dir


def resume_checkpoint(config: GRPOConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: none (``disable``), the run's latest (``auto``), or a given path
    (a checkpoint directory, or a run directory whose latest checkpoint is taken)."""
    resume = config.trainer.resume
    if resume == "disable":
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if (path / "trainer_state.pt").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"trainer.resume={resume!r} is neither a checkpoint nor a run directory with one; "
                                "use 'auto', 'disable' or a checkpoint path")
    return found

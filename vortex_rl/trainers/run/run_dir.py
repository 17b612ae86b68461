"""A run's directory and the checkpoint it continues from; an existing run is never overwritten."""

from __future__ import annotations

import time
from pathlib import Path

from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.run.checkpoint import latest_checkpoint, resumable_checkpoint
from vortex_rl.trainers.run.manifest import verify_checkpoint

RUN_FILES = ("metrics.jsonl", "config.yaml", "checkpoints")  # what makes a directory a run


class RunDirError(ValueError):
    """A run directory that this run may not write to (it holds another run)."""


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


def resume_checkpoint(config: GRPOConfig, run_dir: Path, warn=print) -> Path | None:
    """The checkpoint to continue from: none (``disable``), the run's newest valid one (``auto``; bad ones
    are skipped with a warning), or a given path (a checkpoint directory, verified, or a run directory
    whose newest valid checkpoint is taken). A checkpoint is verified against its manifest here, before
    anything loads."""
    resume = config.trainer.resume
    if resume == "disable":
        return None
    if resume == "auto":
        return resumable_checkpoint(run_dir, warn)
    path = Path(resume).expanduser()
    if (path / "trainer_state.pt").is_file():
        verify_checkpoint(path)
        return path
    found = resumable_checkpoint(path, warn)
    if found is None:
        raise FileNotFoundError(f"trainer.resume={resume!r} is neither a checkpoint nor a run directory with one; "
                                "use 'auto', 'disable' or a checkpoint path")
    return found


def existing_run(run_dir: Path) -> list[str]:
    """The run files in ``run_dir`` (empty for a new or empty directory)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists() and not _empty_dir(run_dir / name)]


def check_run_dir(config: GRPOConfig, run_dir: Path, checkpoint: Path | None) -> None:
    """Refuse to start in a directory that holds a run, unless this run continues it (resumes from one of
    its checkpoints): nothing there is truncated, replaced or repointed."""
    found = existing_run(run_dir)
    if not found or (checkpoint is not None and Path(run_dir).resolve() in Path(checkpoint).resolve().parents):
        return
    where = f"trainer.output_dir={str(run_dir)!r} already holds a run ({', '.join(found)}); nothing was changed."
    if config.trainer.resume == "auto":
        raise RunDirError(f"{where} It has no valid checkpoint to resume from: start a new run with a new "
                          "trainer.output_dir (or move this one away)")
    raise RunDirError(f"{where} Continue it with trainer.resume=auto, or start a new run with a new trainer.output_dir")


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())

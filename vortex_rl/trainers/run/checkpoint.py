"""Checkpoints: written to a temporary directory and renamed into place, so a crash never leaves half of one.

Layout of ``<run>/checkpoints/global_step_<N>/``: ``model/`` (``save_pretrained``: safetensors, config,
tokenizer), ``learner.pt`` (optimizer, LR schedule, KL reference), ``trainer_state.pt`` (step, data
position, RNG states), ``manifest.json`` (size and SHA-256 of each file, written last; ``run.manifest``).
``<run>/checkpoints/latest`` names the newest complete one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from vortex_rl.trainers.run.manifest import CheckpointError, is_complete, newest_valid, verify_checkpoint, write_manifest

PREFIX = "global_step_"
LATEST = "latest"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{PREFIX}{step}"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, *, learner: Any, tokenizer: Any, trainer_state: dict[str, Any],
                    max_to_keep: int | None = None) -> Path:
    """Write checkpoint ``step`` atomically (temporary directory + rename) and point ``latest`` at it."""
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    learner.save_model(tmp / "model", tokenizer)
    torch.save(learner.state_dict(), tmp / "learner.pt")
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / "trainer_state.pt")
    write_manifest(tmp)
    verify_checkpoint(tmp, hashes=False)
    if final.exists():  # re-saving a step (e.g. after a resume): replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(final.parent / LATEST, final.name)
    if max_to_keep is not None:
        for old in list_checkpoints(run_dir)[:-max_to_keep]:
            shutil.rmtree(old)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` (``latest`` if it points to one, else the highest step);
    complete = its manifest's files are all there with their sizes (no hashing: this scans runs)."""
    candidates = _newest_first(run_dir)
    return next((p for p in candidates if is_complete(p)), None)


def resumable_checkpoint(run_dir: Path, warn=print) -> Path | None:
    """The newest checkpoint of ``run_dir`` that passes the full check (sizes and SHA-256); each bad one
    is skipped with a warning naming it."""
    return newest_valid(_newest_first(run_dir), warn)


def _newest_first(run_dir: Path) -> list[Path]:
    found = list(reversed(list_checkpoints(run_dir)))
    marker = Path(run_dir) / "checkpoints" / LATEST
    if marker.is_file():
        pointed = marker.parent / marker.read_text().strip()
        if pointed in found:  # ``latest`` first, then the others by step
            found.remove(pointed)
            found.insert(0, pointed)
    return found


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state, learner_state)`` of a checkpoint directory."""
    path = Path(path)
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.pt); expected .../{PREFIX}<step>")
    states = []
    for name in ("trainer_state.pt", "learner.pt"):
        try:
            states.append(torch.load(path / name, weights_only=True))
        except (OSError, RuntimeError, EOFError, ValueError) as e:  # torch reports a damaged zip as RuntimeError
            raise CheckpointError(f"checkpoint {path}: {name} could not be read ({type(e).__name__}: {e})") from None
    return states[0], states[1]


def restore_training_state(checkpoint: Path, *, learner: Any, sampler: Any, guard: Any = None) -> int:
    """Load the learner, data order, budget guard (when both the run and the checkpoint have one) and RNG
    states saved in ``checkpoint``; returns the step to resume after."""
    trainer_state, learner_state = load_checkpoint(checkpoint)
    learner.load_state_dict(learner_state)
    sampler.load_state_dict(trainer_state["sampler"])
    if guard is not None and "budget_guard" in trainer_state:
        guard.load_state_dict(trainer_state["budget_guard"])
    set_rng_state(trainer_state["rng"])
    return int(trainer_state["step"])

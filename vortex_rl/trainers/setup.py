"""Setting a run up: device, run directory, the checkpoint to resume from, prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vortex_rl.data.loaders import load_problems
from vortex_rl.data.prompts import Prompt, build_prompts
from vortex_rl.trainers.checkpoint import latest_checkpoint
from vortex_rl.trainers.config import GRPOConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name!r} but CUDA is not available; use trainer.device=cpu")
    return device


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


def load_prompts(config: GRPOConfig, tokenizer: Any) -> tuple[list[Prompt], list[Prompt], dict[str, float]]:
    """Training and validation prompts, and ``data/*`` counts (over-long prompts filtered out)."""
    data = config.data
    kwargs = dict(max_prompt_length=data.max_prompt_length, instruction=data.instruction,
                  filter_overlong=data.filter_overlong_prompts, chat_template_kwargs=data.apply_chat_template_kwargs)
    train = build_prompts(load_problems(data.train_dataset, data.train_files, data.train_split, **data.train_options),
                          tokenizer, **kwargs)
    if len(train.prompts) < data.train_batch_size:
        raise ValueError(f"{len(train.prompts)} training prompts remain, fewer than data.train_batch_size={data.train_batch_size}")
    metrics = {"data/train_prompts": float(len(train.prompts)), "data/train_filtered_overlong": float(train.num_filtered)}
    val_prompts: list[Prompt] = []
    if data.val_dataset:
        problems = load_problems(data.val_dataset, data.val_files, data.val_split, **data.val_options)
        val = build_prompts(problems[: data.val_max_samples] if data.val_max_samples else problems, tokenizer, **kwargs)
        val_prompts = val.prompts
        metrics.update({"data/val_prompts": float(len(val.prompts)), "data/val_filtered_overlong": float(val.num_filtered)})
    return train.prompts, val_prompts, metrics

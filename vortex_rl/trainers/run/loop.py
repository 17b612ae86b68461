"""`train`: build a run (``run.build``: model, engines, reward workers, data, local or over Ray), then the
step loop with validation, logging and checkpoints."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.config.dataclass_dicts import to_plain
from vortex_rl.trainers.run.build import build_run
from vortex_rl.trainers.run.checkpoint import save_checkpoint
from vortex_rl.trainers.run.plots import save_plots
from vortex_rl.trainers.run.manifest import clean_stale_temp
from vortex_rl.trainers.run.preflight import preflight
from vortex_rl.trainers.run.run_dir import check_run_dir, resume_checkpoint
from vortex_rl.trainers.run.tracking import Tracker
from vortex_rl.trainers.step.seeds import step_seed
from vortex_rl.trainers.step.train_step import TrainContext, train_step
from vortex_rl.trainers.step.validation import validate


def train(config: GRPOConfig, run_dir: Path) -> Path:
    """Train with ``config``, writing metrics, plots and checkpoints into ``run_dir``; returns ``run_dir``.

    Before anything loads: the checkpoint to resume from is verified, ``run_dir`` is checked (an existing
    run is continued with ``trainer.resume=auto`` or refused, never overwritten), the device and model
    source are checked. ``run_dir`` and its ``config.yaml`` are written only once the run has been built,
    so a failed start leaves nothing behind and a failed resume leaves the run as it was."""
    run_dir = Path(run_dir)
    checkpoint = resume_checkpoint(config, run_dir, warn=tqdm.write)
    check_run_dir(config, run_dir, checkpoint)
    preflight(config, resuming=checkpoint is not None)
    clean_stale_temp(run_dir, warn=tqdm.write)
    text = config_text(config)
    tqdm.write(f"run directory: {run_dir}\n{text}")
    random.seed(config.trainer.seed)
    torch.manual_seed(config.trainer.seed)
    ctx, start_step, first_metrics = build_run(config, checkpoint)
    tracker = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(text)
        name = config.trainer.experiment_name or f"{config.recipe or 'run'}-{run_dir.name}"
        tracker = Tracker(run_dir, backends=config.trainer.logger, config=to_plain(config),
                          project=config.trainer.project_name, name=name, resume_step=start_step)
        if start_step == 0:
            if config.trainer.val_before_train and ctx.val_prompts:
                first_metrics.update(validate(ctx.worker, ctx.reward_pool, ctx.val_prompts, config,
                                              seed=step_seed(config.trainer.seed, 0, 2)))
            tracker.log(first_metrics, step=0)
        run_steps(ctx, tracker, run_dir, start_step)
    finally:
        ctx.reward_pool.close()
        ctx.shutdown()
        if tracker is not None:
            tracker.close()
            save_plots(tracker.history, run_dir)
    return run_dir


def config_text(config: GRPOConfig) -> str:
    """The resolved config as YAML (printed at the start, written to ``run_dir/config.yaml``)."""
    import yaml

    return yaml.safe_dump(to_plain(config), sort_keys=False)


def run_steps(ctx: TrainContext, tracker: Tracker, run_dir: Path, start_step: int) -> None:
    """Steps ``start_step + 1 .. total_steps``: validation every ``test_freq`` and at the end, checkpoints
    every ``save_freq`` and at the end."""
    trainer = ctx.config.trainer
    total = trainer.total_steps
    for step in tqdm(range(start_step + 1, total + 1), desc="train", initial=start_step, total=total,
                     dynamic_ncols=True):
        metrics = train_step(ctx, step)
        if ctx.val_prompts and ((trainer.test_freq > 0 and step % trainer.test_freq == 0) or step == total):
            metrics.update(validate(ctx.worker, ctx.reward_pool, ctx.val_prompts, ctx.config,
                                    seed=step_seed(trainer.seed, step, 2)))
        tracker.log(metrics, step=step)
        if (trainer.save_freq > 0 and step % trainer.save_freq == 0) or step == total:
            save_checkpoint(run_dir, step, learner=ctx.learner, tokenizer=ctx.tokenizer,
                            trainer_state=trainer_state(ctx), max_to_keep=trainer.max_ckpt_to_keep)
            save_plots(tracker.history, run_dir)


def trainer_state(ctx: TrainContext) -> dict:
    """What a checkpoint keeps besides the learner: the data order and the budget guard's schedule."""
    state = {"sampler": ctx.sampler.state_dict()}
    if ctx.guard is not None:
        state["budget_guard"] = ctx.guard.state_dict()
    return state

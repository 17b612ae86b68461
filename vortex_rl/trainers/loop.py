"""`train`: build a run (model, engine, reward workers, data), then the step loop with validation,
logging and checkpoints. ``trainer.orchestrator=local`` runs the learner and the rollout worker here;
``ray`` builds the same context over Ray actors (``ray_orchestrator.build_ray``)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vortex_rl.data.reward_pool import RewardPool
from vortex_rl.data.sampler import EpochSampler
from vortex_rl.trainers.checkpoint import restore_training_state, save_checkpoint
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.learner import LocalLearner
from vortex_rl.trainers.models import autocast, load_actor, load_tokenizer
from vortex_rl.trainers.plots import save_plots
from vortex_rl.trainers.rollout_worker import LocalRolloutWorker
from vortex_rl.trainers.setup import load_prompts, resolve_device, resume_checkpoint
from vortex_rl.trainers.step import TrainContext, step_seed, train_step
from vortex_rl.trainers.structured import to_plain
from vortex_rl.trainers.tracking import Tracker
from vortex_rl.trainers.validation import validate
from vortex_rl.trainers.warmup import sft_warmup


def train(config: GRPOConfig, run_dir: Path) -> Path:
    """Train with ``config``, writing metrics, plots and checkpoints into ``run_dir``; returns ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)
    random.seed(config.trainer.seed)
    torch.manual_seed(config.trainer.seed)
    checkpoint = resume_checkpoint(config, run_dir)
    ctx, start_step, first_metrics = build(config, checkpoint)
    name = config.trainer.experiment_name or f"{config.recipe or 'run'}-{run_dir.name}"
    tracker = Tracker(run_dir, backends=config.trainer.logger, config=to_plain(config),
                      project=config.trainer.project_name, name=name, resume_step=start_step)
    try:
        if start_step == 0:
            if config.trainer.val_before_train and ctx.val_prompts:
                first_metrics.update(validate(ctx.worker, ctx.reward_pool, ctx.val_prompts, config,
                                              seed=step_seed(config.trainer.seed, 0, 2)))
            tracker.log(first_metrics, step=0)
        run_steps(ctx, tracker, run_dir, start_step)
    finally:
        ctx.reward_pool.close()
        if ctx.shutdown is not None:
            ctx.shutdown()
        tracker.close()
        save_plots(tracker.history, run_dir)
    return run_dir


def save_config(config: GRPOConfig, run_dir: Path) -> None:
    """Print the resolved config and write it to ``run_dir/config.yaml``."""
    import yaml

    text = yaml.safe_dump(to_plain(config), sort_keys=False)
    tqdm.write(f"run directory: {run_dir}\n{text}")
    (run_dir / "config.yaml").write_text(text)


def build(config: GRPOConfig, checkpoint: Path | None) -> tuple[TrainContext, int, dict]:
    """Tokenizer, prompts, actor (from the checkpoint when resuming, else warmed up), learner, engine, sampler."""
    if config.trainer.orchestrator == "ray":
        from vortex_rl.trainers.ray_orchestrator import build_ray

        return build_ray(config, checkpoint)
    device = resolve_device(config.trainer.device)
    model_dir = str(checkpoint / "model") if checkpoint else None
    tokenizer = load_tokenizer(config.model, checkpoint_dir=model_dir)
    train_prompts, val_prompts, metrics = load_prompts(config, tokenizer)
    model = load_actor(config.model, tokenizer, device=device, seed=config.trainer.seed, checkpoint_dir=model_dir)
    if checkpoint is None and config.sft_warmup.steps:
        metrics.update(sft_warmup(model, tokenizer, train_prompts, config.sft_warmup, device=device,
                                  seed=config.trainer.seed, precision=lambda: autocast(config.model, device)))
    learner = LocalLearner(model, config, device)
    sampler = EpochSampler(len(train_prompts), config.data.train_batch_size, seed=config.trainer.seed,
                           shuffle=config.data.shuffle)
    start_step = 0
    if checkpoint is not None:
        start_step = restore_training_state(checkpoint, learner=learner, sampler=sampler)
        tqdm.write(f"resuming from {checkpoint} (step {start_step})")
    worker = LocalRolloutWorker(model, tokenizer, config, device)
    pool = RewardPool(config.reward.fn, num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = TrainContext(config=config, learner=learner, worker=worker, reward_pool=pool, train_prompts=train_prompts,
                       val_prompts=val_prompts, sampler=sampler, tokenizer=tokenizer, pad_id=pad_id)
    return ctx, start_step, metrics


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
                            trainer_state={"sampler": ctx.sampler.state_dict()}, max_to_keep=trainer.max_ckpt_to_keep)
            save_plots(tracker.history, run_dir)

"""`build_run`: one assembly for both orchestrators. Tokenizer and prompts here, the learner / engines /
reward workers from ``local.orchestrator`` or ``ray.orchestrator``, then the data order, the checkpoint's
training state and a first, checked weight sync, so every engine starts from the learner's weights."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from vortex_rl.data.sampler import EpochSampler
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.model_loader import load_tokenizer, pad_token_id
from vortex_rl.trainers.run.checkpoint import restore_training_state
from vortex_rl.trainers.run.prompts import load_prompts
from vortex_rl.trainers.step.budget_guard import make_budget_guard
from vortex_rl.trainers.step.protocols import RunParts
from vortex_rl.trainers.step.train_step import TrainContext


def build_run(config: GRPOConfig, checkpoint: Path | None) -> tuple[TrainContext, int, dict[str, float]]:
    """The run's ``TrainContext``, the step it resumes after (0 for a new run) and the step-0 metrics
    (prompt counts, warm-up). ``context.shutdown()`` releases the orchestrator's processes."""
    model_dir = str(checkpoint / "model") if checkpoint else None
    tokenizer = load_tokenizer(config.model, checkpoint_dir=model_dir)
    train_prompts, val_prompts, metrics = load_prompts(config, tokenizer)
    warmup = train_prompts if checkpoint is None and config.sft_warmup.steps else None
    parts = start_parts(config, tokenizer, model_dir=model_dir, warmup_prompts=warmup)
    try:
        metrics.update(parts.metrics)
        sampler = EpochSampler(len(train_prompts), config.data.train_batch_size, seed=config.trainer.seed,
                               shuffle=config.data.shuffle)
        start_step = 0
        guard = make_budget_guard(config)
        if checkpoint is not None:
            start_step = restore_training_state(checkpoint, learner=parts.learner, sampler=sampler, guard=guard)
            tqdm.write(f"resuming from {checkpoint} (step {start_step})")
            if guard is not None:
                parts.worker.set_budget_schedule(*guard.schedule())
        parts.weight_sync()  # the engines start from the learner's weights (warmed up or restored), checked
    except BaseException:
        parts.reward_pool.close()
        parts.close()
        raise
    ctx = TrainContext(config=config, learner=parts.learner, worker=parts.worker, reward_pool=parts.reward_pool,
                       weight_sync=parts.weight_sync, train_prompts=train_prompts, val_prompts=val_prompts,
                       sampler=sampler, tokenizer=tokenizer, pad_id=pad_token_id(tokenizer), shutdown=parts.close,
                       guard=guard)
    return ctx, start_step, metrics


def start_parts(config: GRPOConfig, tokenizer, *, model_dir: str | None, warmup_prompts) -> RunParts:
    """``trainer.orchestrator`` picks who builds the learner, the engines and the reward workers."""
    if config.trainer.orchestrator == "ray":
        from vortex_rl.trainers.ray.orchestrator import start_ray  # imports Ray

        return start_ray(config, model_dir=model_dir, warmup_prompts=warmup_prompts)
    from vortex_rl.trainers.local.orchestrator import start_local

    return start_local(config, tokenizer, model_dir=model_dir, warmup_prompts=warmup_prompts)

"""A run's training and validation prompts, loaded and tokenized from the ``data`` section."""

from __future__ import annotations

import logging
from typing import Any

from vortex_rl.data.answer_check import MATH_VERIFY_REWARDS, check_ground_truths
from vortex_rl.data.loaders import load_problems
from vortex_rl.data.prompts import Prompt, build_prompts
from vortex_rl.trainers.config import GRPOConfig

log = logging.getLogger(__name__)


def load_prompts(config: GRPOConfig, tokenizer: Any) -> tuple[list[Prompt], list[Prompt], dict[str, float]]:
    """Training and validation prompts, and ``data/*`` counts (over-long prompts filtered out; with a
    math-verify reward, ground truths it cannot parse or that make it raise, each also logged with its row)."""
    data = config.data
    kwargs = dict(max_prompt_length=data.max_prompt_length, instruction=data.instruction,
                  filter_overlong=data.filter_overlong_prompts, chat_template_kwargs=data.apply_chat_template_kwargs)
    train = build_prompts(load_problems(data.train_dataset, data.train_files, data.train_split, **data.train_options),
                          tokenizer, **kwargs)
    if len(train.prompts) < data.train_batch_size:
        raise ValueError(f"{len(train.prompts)} training prompts remain, fewer than data.train_batch_size={data.train_batch_size}")
    metrics = {"data/train_prompts": float(len(train.prompts)), "data/train_filtered_overlong": float(train.num_filtered)}
    metrics.update(_checked_answers(config, train.prompts, "train"))
    val_prompts: list[Prompt] = []
    if data.val_dataset:
        problems = load_problems(data.val_dataset, data.val_files, data.val_split, **data.val_options)
        val = build_prompts(problems[: data.val_max_samples] if data.val_max_samples else problems, tokenizer, **kwargs)
        val_prompts = val.prompts
        metrics.update({"data/val_prompts": float(len(val.prompts)), "data/val_filtered_overlong": float(val.num_filtered)})
        metrics.update(_checked_answers(config, val_prompts, "val"))
    return train.prompts, val_prompts, metrics


def _checked_answers(config: GRPOConfig, prompts: list[Prompt], split: str) -> dict[str, float]:
    if not config.data.check_answers or config.reward.fn not in MATH_VERIFY_REWARDS:
        return {}
    result = check_ground_truths([p.problem for p in prompts])
    for line in result.report(f"data.{split}_dataset"):
        log.warning(line)
    return result.metrics(split)

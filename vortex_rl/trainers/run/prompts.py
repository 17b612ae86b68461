"""A run's training and validation prompts, loaded and tokenized from the ``data`` section."""

from __future__ import annotations

from typing import Any

from vortex_rl.data.loaders import load_problems
from vortex_rl.data.prompts import Prompt, build_prompts
from vortex_rl.trainers.config import GRPOConfig


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

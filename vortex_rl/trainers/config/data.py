"""``data``: the prompts, their reference answers and their lengths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vortex_rl.data import DATASETS
from vortex_rl.data.prompts import BOXED_INSTRUCTION
from vortex_rl.trainers.config.checks import check


@dataclass
class DataConfig:
    """Prompts and their reference answers.

    train_dataset / val_dataset: registered dataset names (``vortex_rl.data.DATASETS``): ``polaris``,
        ``aime24``, ``file`` (local .jsonl/.parquet, plain or verl schema), ``synthetic_addition``,
        ``arith_word``, ``kv_retrieval``. ``val_dataset: null`` turns validation off.
    train_files / val_files: hub id, local directory or file for that dataset (``null`` = its default).
    train_options / val_options: extra keyword arguments of the dataset loader (e.g. ``max_operand``).
    train_split / val_split: dataset split to load.
    val_max_samples: keep only the first N validation problems (``null`` = all).
    train_batch_size: prompts per training step (each sampled ``rollout.n`` times).
    max_prompt_length: prompts longer than this (tokens, chat template included) are dropped and counted.
    max_response_length: generated tokens per sample at most.
    filter_overlong_prompts: drop over-long prompts (``false``: raise on the first one).
    shuffle: reshuffle the training prompts every epoch.
    instruction: appended to each question (asks for the answer in ``\\boxed{}``).
    apply_chat_template_kwargs: extra arguments of ``tokenizer.apply_chat_template`` (e.g. ``enable_thinking``).
    check_answers: parse every ground truth with math-verify when the data loads (with the ``math`` /
        ``math_lenient`` rewards); bad ones are logged with their row and counted
        (``data/<split>_unparseable_answers``, ``data/<split>_answer_errors``). About 1 ms per answer.
    """

    train_dataset: str = "file"
    train_files: str | None = None
    train_options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_dataset: str | None = None
    val_files: str | None = None
    val_options: dict[str, Any] = field(default_factory=dict)
    val_split: str = "test"
    val_max_samples: int | None = None
    train_batch_size: int = 8
    max_prompt_length: int = 1024
    max_response_length: int = 1024
    filter_overlong_prompts: bool = True
    shuffle: bool = True
    instruction: str = BOXED_INSTRUCTION
    apply_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    check_answers: bool = True

    def __post_init__(self) -> None:
        DATASETS.check_name(self.train_dataset, "data.train_dataset")
        if self.val_dataset is not None:
            DATASETS.check_name(self.val_dataset, "data.val_dataset")
        for name in ("train_batch_size", "max_prompt_length", "max_response_length"):
            check(getattr(self, name) >= 1, f"data.{name}={getattr(self, name)} must be >= 1")

    @property
    def max_sequence_length(self) -> int:
        """The longest sequence a run holds: prompt plus response."""
        return self.max_prompt_length + self.max_response_length

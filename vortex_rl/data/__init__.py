"""Datasets, prompts and rewards for math RL.

Registries: ``DATASETS`` (``loader(path, split, **options) -> list[MathProblem]``) and ``REWARDS``
(``reward(response, ground_truth) -> float``). This package imports no torch, so reward worker
processes start fast.
"""

from vortex_rl.data.char_tokenizer import build_char_tokenizer
from vortex_rl.data.loaders import DATASETS, load_problems, read_rows, rows_to_problems
from vortex_rl.data.math_reward import REWARDS, last_boxed
from vortex_rl.data.problem import MathProblem, MissingFieldError
from vortex_rl.data.prompts import BOXED_INSTRUCTION, Prompt, PromptSet, build_prompts, encode_prompt
from vortex_rl.data.reward_pool import RewardPool, RewardResult
from vortex_rl.data.sampler import EpochSampler
from vortex_rl.data import retrieval as _retrieval  # noqa: F401  (registers the generated datasets)
from vortex_rl.data import synthetic as _synthetic  # noqa: F401

__all__ = [
    "BOXED_INSTRUCTION", "DATASETS", "EpochSampler", "MathProblem", "MissingFieldError", "Prompt", "PromptSet",
    "REWARDS", "RewardPool", "RewardResult", "build_char_tokenizer", "build_prompts", "encode_prompt",
    "last_boxed", "load_problems", "read_rows", "rows_to_problems",
]

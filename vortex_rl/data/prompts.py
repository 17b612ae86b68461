"""Prompts: problems rendered through the tokenizer's chat template, over-long ones filtered and counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vortex_rl.data.problem import MathProblem

# The instruction verl's and Polaris' math recipes append to each question.
BOXED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


@dataclass(frozen=True)
class Prompt:
    """A problem with its prompt token ids (chat template applied, generation prompt included)."""

    problem: MathProblem
    token_ids: tuple[int, ...]


@dataclass
class PromptSet:
    """The prompts that fit, and how many problems were dropped for exceeding the length limit."""

    prompts: list[Prompt]
    num_filtered: int = 0
    filtered_indices: list[int] = field(default_factory=list)


def messages_for(problem: MathProblem, instruction: str) -> list[dict[str, str]]:
    """Chat messages for ``problem``: its own messages (verl schema) or one user turn with the instruction."""
    if problem.messages is not None:
        return [dict(m) for m in problem.messages]
    content = f"{problem.problem} {instruction}".strip() if instruction else problem.problem
    return [{"role": "user", "content": content}]


def encode_prompt(problem: MathProblem, tokenizer: Any, *, instruction: str = BOXED_INSTRUCTION,
                  chat_template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
    """Token ids of ``problem``'s prompt, through the chat template when the tokenizer has one.

    A tokenizer without a chat template (a base model) gets the plain message text.
    """
    messages = messages_for(problem, instruction)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, **dict(chat_template_kwargs or {})
        )
        # transformers 5 returns a BatchEncoding, 4.x a list of ids.
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    else:
        ids = tokenizer("\n".join(m["content"] for m in messages)).input_ids
    return [int(i) for i in ids]


def build_prompts(problems: Sequence[MathProblem], tokenizer: Any, *, max_prompt_length: int,
                  instruction: str = BOXED_INSTRUCTION, filter_overlong: bool = True,
                  chat_template_kwargs: Mapping[str, Any] | None = None) -> PromptSet:
    """Encode ``problems``; prompts longer than ``max_prompt_length`` tokens are dropped and counted.

    With ``filter_overlong=False`` an over-long prompt raises instead, naming its row.
    """
    if max_prompt_length < 1:
        raise ValueError(f"max_prompt_length={max_prompt_length} must be >= 1")
    result = PromptSet(prompts=[])
    for problem in problems:
        ids = encode_prompt(problem, tokenizer, instruction=instruction, chat_template_kwargs=chat_template_kwargs)
        if len(ids) <= max_prompt_length:
            result.prompts.append(Prompt(problem=problem, token_ids=tuple(ids)))
            continue
        if not filter_overlong:
            raise ValueError(
                f"{problem.source}: row {problem.index} has a {len(ids)}-token prompt, over "
                f"max_prompt_length={max_prompt_length}; raise the limit or set data.filter_overlong_prompts=true"
            )
        result.num_filtered += 1
        result.filtered_indices.append(problem.index)
    if not result.prompts:
        raise ValueError(
            f"all {len(problems)} prompts exceed max_prompt_length={max_prompt_length} tokens; raise the limit"
        )
    return result

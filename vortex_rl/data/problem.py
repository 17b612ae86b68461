"""`MathProblem`: one question with its reference answer, and the row checks every loader shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


class MissingFieldError(ValueError):
    """A dataset row lacks a required field (the message names the row index and the field)."""


@dataclass(frozen=True)
class MathProblem:
    """A prompt and the answer a reward function checks a response against.

    Attributes
    ----------
    problem:
        The question text. For rows that arrive as chat messages (verl's schema) this is the last user
        message, kept for logging and for datasets that need the plain text.
    answer:
        The reference answer (ground truth), e.g. ``"\\frac{1}{2}"``.
    index:
        Position of the row in its source, for error messages and for tracing samples back.
    source:
        Name of the dataset (``"polaris"``, ``"aime24"``, a file name), used in metric names.
    messages:
        Chat messages to render with the tokenizer's chat template, or ``None`` to build them from
        ``problem`` and the instruction.
    """

    problem: str
    answer: str
    index: int
    source: str
    messages: tuple[Mapping[str, str], ...] | None = None


def require_field(row: Mapping[str, Any], field: str, index: int, source: str) -> Any:
    """``row[field]`` (dotted paths such as ``reward_model.ground_truth`` descend into dicts).

    Raises
    ------
    MissingFieldError
        When the field, or a dict on its path, is absent or ``None``.
    """
    value: Any = row
    for part in field.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            present = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise MissingFieldError(
                f"{source}: row {index} has no field {field!r} (fields present: {present})"
            )
        value = value[part]
    return value


def problem_from_row(
    row: Mapping[str, Any], index: int, source: str, *, problem_key: str = "problem", answer_key: str = "answer"
) -> MathProblem:
    """A ``{problem, answer}`` row (field names configurable) as a ``MathProblem``."""
    problem = require_field(row, problem_key, index, source)
    answer = require_field(row, answer_key, index, source)
    return MathProblem(problem=str(problem), answer=_answer_text(answer), index=index, source=source)


def problem_from_verl_row(row: Mapping[str, Any], index: int, source: str) -> MathProblem:
    """A row in verl's parquet schema: ``prompt`` (chat messages) and ``reward_model.ground_truth``."""
    messages = require_field(row, "prompt", index, source)
    answer = require_field(row, "reward_model.ground_truth", index, source)
    if isinstance(messages, str) or not isinstance(messages, Sequence) or len(messages) == 0:
        raise MissingFieldError(
            f"{source}: row {index} field 'prompt' must be a non-empty list of chat messages, got {messages!r}"
        )
    checked = []
    for turn, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise MissingFieldError(
                f"{source}: row {index} field 'prompt' message {turn} needs 'role' and 'content', got {message!r}"
            )
        checked.append({"role": str(message["role"]), "content": str(message["content"])})
    user_turns = [m["content"] for m in checked if m["role"] == "user"]
    text = user_turns[-1] if user_turns else checked[-1]["content"]
    return MathProblem(problem=text, answer=_answer_text(answer), index=index, source=source, messages=tuple(checked))


def _answer_text(answer: Any) -> str:
    # Ground truths come as str, int or a one-element list depending on the dataset.
    if isinstance(answer, (list, tuple)) and len(answer) == 1:
        answer = answer[0]
    return str(answer).strip()

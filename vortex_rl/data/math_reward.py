"""Reward functions for math answers: the last ``\\boxed{}`` of a response checked against the reference.

Every reward has the registry signature ``reward(response: str, ground_truth: str) -> float`` and must
be a top-level function (it is pickled by name into reward worker processes).
"""

from __future__ import annotations

import functools
import logging
import re

from vortex_rl.registry import Registry

REWARDS: Registry = Registry("reward")

_BOXED_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched; ``None`` if absent.

    >>> last_boxed("so \\\\boxed{1} or rather \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = max(text.rfind(cmd) for cmd in _BOXED_COMMANDS)
    while start >= 0:
        content = _braced_after(text, text.find("{", start))
        if content is not None and text[start:text.find("{", start)].strip() in _BOXED_COMMANDS:
            return content
        start = max(text.rfind(cmd, 0, start) for cmd in _BOXED_COMMANDS)
    return None


def _braced_after(text: str, open_at: int) -> str | None:
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


@REWARDS.register("math")
def math_verify_reward(response: str, ground_truth: str) -> float:
    """1.0 when the last boxed answer of ``response`` equals ``ground_truth`` under math-verify, else 0.0.

    Equivalence is math-verify's: numbers, fractions and decimals, LaTeX expressions, sets and intervals,
    with units and degree signs stripped. No boxed answer scores 0. math-verify's own ``signal.alarm``
    timeouts are off: the caller (``RewardPool``) bounds the whole call, in a worker's main thread.
    """
    try:
        from math_verify import verify
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'math' reward needs math-verify: pip install 'vortex-rl[train]'") from e
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # the reference first: a bad one raises (and is counted) whatever the response holds
    gold = _parsed_ground_truth(ground_truth)
    answer = last_boxed(response)
    if answer is None or not answer.strip():
        return 0.0
    predicted = list(_parse_boxed(answer))
    if not predicted:
        return 0.0
    return float(verify(gold, predicted, timeout_seconds=None, raise_on_error=True))


@functools.lru_cache(maxsize=8192)
def _parse_boxed(answer: str) -> tuple:
    """math-verify's parse of ``\\boxed{answer}``, once per worker and string: a group's samples share a
    reference, and small models repeat their answers, while the parse (sympy) costs more than the rest of
    most calls. A parse that raises is not cached: it raises (and is counted) each time."""
    from math_verify import parse

    return tuple(parse(f"$\\boxed{{{answer}}}$", parsing_timeout=None, raise_on_error=True))


def _parsed_ground_truth(ground_truth: str) -> list:
    gold = _parse_boxed(ground_truth)
    if not gold:
        raise ValueError(f"ground truth {ground_truth!r} could not be parsed by math-verify")
    return list(gold)


@REWARDS.register("math_lenient")
def math_lenient_reward(response: str, ground_truth: str) -> float:
    """``math``, except that a response without a boxed answer is judged by its last number.

    For small models that answer in words ("The final answer is 54.") before they learn the format.
    """
    if last_boxed(response) is None:
        numbers = _NUMBER.findall(response)
        if not numbers:
            return 0.0
        response = f"\\boxed{{{numbers[-1].replace(',', '')}}}"
    return math_verify_reward(response, ground_truth)


@REWARDS.register("boxed_exact")
def boxed_exact_reward(response: str, ground_truth: str) -> float:
    """1.0 when the last boxed answer equals ``ground_truth`` as a string, spaces ignored (no math-verify)."""
    answer = last_boxed(response)
    if answer is None:
        return 0.0
    return float("".join(answer.split()) == "".join(str(ground_truth).split()))

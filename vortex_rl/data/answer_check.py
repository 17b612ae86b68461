"""Ground truths the reward can trust: every reference answer parsed by math-verify when the data loads.

An answer math-verify cannot turn into a mathematical expression (``\\frac{{{\\sqrt[}{`` comes back as a
bare string) would score 0 against every response for the whole run, and one whose parse raises would
fail every reward call; both are reported with their row and counted, the error text kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

from vortex_rl.data.problem import MathProblem

MATH_VERIFY_REWARDS = ("math", "math_lenient")  # the rewards that parse ground truths with math-verify


@dataclass
class AnswerCheck:
    """What ``check_ground_truths`` found.

    checked: answers parsed.  unparseable: ``(row index, answer)`` with no expression math-verify accepts.
    errors: ``(row index, answer, error text)`` whose parse raised.
    """

    checked: int = 0
    unparseable: list[tuple[int, str]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    def metrics(self, prefix: str) -> dict[str, float]:
        """``data/<prefix>_unparseable_answers`` and ``data/<prefix>_answer_errors``."""
        return {f"data/{prefix}_unparseable_answers": float(len(self.unparseable)),
                f"data/{prefix}_answer_errors": float(len(self.errors))}

    def report(self, source: str, *, limit: int = 10) -> list[str]:
        """One line per bad answer (the first ``limit`` of each kind), then the counts."""
        lines = [f"{source}: row {i}: ground truth {a!r} cannot be parsed by math-verify (scores 0 always)"
                 for i, a in self.unparseable[:limit]]
        lines += [f"{source}: row {i}: ground truth {a!r} makes math-verify raise: {e}" for i, a, e in self.errors[:limit]]
        if self.unparseable or self.errors:
            lines.append(f"{source}: {len(self.unparseable)} unparseable and {len(self.errors)} raising ground "
                         f"truths of {self.checked}")
        return lines


def parse_status(answer: str) -> tuple[str, str]:
    """``("ok" | "unparseable" | "error", detail)`` for one reference answer, parsed as the ``math`` reward
    parses it (``$\\boxed{answer}$``). ``unparseable``: no sympy expression among the results."""
    from math_verify import parse
    from sympy import Basic, MatrixBase

    if not answer.strip():
        return "unparseable", "empty answer"
    try:
        parsed = parse(f"$\\boxed{{{answer}}}$", parsing_timeout=None, raise_on_error=True)
    except Exception as e:  # noqa: BLE001 - any failure is the answer's, reported with its text
        return "error", f"{type(e).__name__}: {e}"[:300]
    if any(isinstance(p, (Basic, MatrixBase)) for p in parsed):
        return "ok", ""
    return "unparseable", f"parsed only as {parsed!r}"[:300]


def check_ground_truths(problems: Sequence[MathProblem]) -> AnswerCheck:
    """Parse every ``problem.answer``; the result lists the bad ones by ``problem.index``."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    result = AnswerCheck()
    for problem in problems:
        status, detail = parse_status(problem.answer)
        result.checked += 1
        if status == "unparseable":
            result.unparseable.append((problem.index, problem.answer))
        elif status == "error":
            result.errors.append((problem.index, problem.answer, detail))
    return result

"""The sparse budget guard's decision: per context-length bin, raise the page budget when the tail of the
rollout/training acceptance rate falls below a floor, lower it again when the tail is healthy.

Published sparse-RL work keeps the 5th percentile of per-token acceptance (``alpha_p5``) above about 0.86
by growing a static budget with context length; this makes the schedule follow the measurement. Per
bin ``i`` and step:

- ``alpha_p5 < min_alpha_p5``: double the budget (at most ``ceilings[i]``, dense for that bin), reset the
  healthy streak and remember the budget that failed;
- ``alpha_p5 >= min_alpha_p5 + hysteresis`` for ``patience`` steps in a row: halve it, but never below
  ``floors[i]`` (the configured schedule) nor to a budget that failed before (no raise/lower ping-pong);
- otherwise (inside the hysteresis band, or no tokens in the bin): keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class GuardState:
    """Per bin: the current budget (pages), the healthy streak (steps) and the highest budget that failed
    (0: none). Plain lists, so it goes into a checkpoint as is."""

    budgets: list[int]
    healthy: list[int] = field(default_factory=list)
    failed_at: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.budgets)
        self.healthy = list(self.healthy) or [0] * n
        self.failed_at = list(self.failed_at) or [0] * n
        if not len(self.healthy) == len(self.failed_at) == n:
            raise ValueError(f"GuardState: {n} budgets but {len(self.healthy)} streaks and {len(self.failed_at)} "
                             "failure marks; one of each per bin")

    def state_dict(self) -> dict[str, list[int]]:
        return {"budgets": list(self.budgets), "healthy": list(self.healthy), "failed_at": list(self.failed_at)}


def guard_bins(max_tokens: int, bin_tokens: int) -> list[tuple[int, int]]:
    """Context-length bins ``[(0, b), (b, 2b), ...]`` covering ``1..max_tokens`` tokens (``(a, b]`` each)."""
    if max_tokens < 1 or bin_tokens < 1:
        raise ValueError(f"guard_bins needs max_tokens={max_tokens} >= 1 and bin_tokens={bin_tokens} >= 1")
    count = -(-max_tokens // bin_tokens)
    return [(i * bin_tokens, (i + 1) * bin_tokens) for i in range(count)]


def dense_pages(context_tokens: int, page_size: int) -> int:
    """Pages of a ``context_tokens``-token context: a budget this large attends to all of it."""
    return -(-context_tokens // page_size)


def guard_update(state: GuardState, alpha_p5: Sequence[float | None], *, min_alpha_p5: float, hysteresis: float,
                 patience: int, floors: Sequence[int], ceilings: Sequence[int]) -> GuardState:
    """The next ``GuardState`` after one step's per-bin ``alpha_p5`` (``None``: no tokens in that bin).

    ``floors[i] <= budgets[i] <= ceilings[i]`` holds before and after. Pure: ``state`` is not changed.
    """
    n = len(state.budgets)
    if not len(alpha_p5) == len(floors) == len(ceilings) == n:
        raise ValueError(f"guard_update: {n} bins but {len(alpha_p5)} alpha values, {len(floors)} floors and "
                         f"{len(ceilings)} ceilings")
    budgets, healthy, failed = list(state.budgets), list(state.healthy), list(state.failed_at)
    for i, p5 in enumerate(alpha_p5):
        if p5 is None:
            continue
        if p5 < min_alpha_p5:
            failed[i] = max(failed[i], budgets[i])
            budgets[i] = min(ceilings[i], 2 * budgets[i])
            healthy[i] = 0
        elif p5 >= min_alpha_p5 + hysteresis:
            healthy[i] += 1
            lower = max(floors[i], budgets[i] // 2)
            if healthy[i] >= patience and failed[i] < lower < budgets[i]:
                budgets[i] = lower
                healthy[i] = 0
        else:
            healthy[i] = 0
    return GuardState(budgets, healthy, failed)

"""`SparseConfig`: how many KV pages each decode step attends to, and which."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SparseConfig:
    """Page-level sparsity of decode attention.

    Attributes
    ----------
    page_size:
        Tokens per KV page (a power of two). Pages are the unit of selection.
    budget_pages:
        Pages attended per request and KV head, sink and local pages included. With a
        ``budget_schedule`` this is the budget for contexts longer than its last step.
    sink_pages:
        The first pages of every request, always attended (attention sinks).
    local_pages:
        The most recent pages, always attended; the partial last page is one of them.
    dense_layers:
        Layer indices that keep dense decode attention.
    budget_schedule:
        Optional ``((context_tokens_up_to, budget_pages), ...)`` steps, ascending: a context of ``L``
        tokens uses the budget of the first step with ``L <= context_tokens_up_to``. Kernels pad the page
        list to ``max_budget``.
    max_budget_pages:
        Optional page-list width held for budgets that change while the engine runs (the trainer's budget
        guard swaps schedules between steps, ``FlowRunner.set_budget_schedule``): ``max_budget`` is at
        least this, so buffers and CUDA graphs sized once fit every later schedule.
    """

    page_size: int = 16
    budget_pages: int = 32
    sink_pages: int = 1
    local_pages: int = 2
    dense_layers: tuple[int, ...] = ()
    budget_schedule: tuple[tuple[int, int], ...] | None = field(default=None)
    max_budget_pages: int | None = None

    def __post_init__(self) -> None:
        # Accept lists from YAML/CLI but store tuples so the config stays hashable and frozen.
        object.__setattr__(self, "dense_layers", tuple(int(i) for i in self.dense_layers))
        if self.budget_schedule is not None:
            object.__setattr__(
                self, "budget_schedule", tuple((int(a), int(b)) for a, b in self.budget_schedule)
            )
        ps = self.page_size
        if not isinstance(ps, int) or ps <= 0 or ps & (ps - 1):
            raise ValueError(f"page_size={ps!r} must be a positive power of two (e.g. 16)")
        if self.sink_pages < 0 or self.local_pages < 1:
            raise ValueError(
                f"sink_pages={self.sink_pages} must be >= 0 and local_pages={self.local_pages} >= 1 "
                "(the page being written is always attended)"
            )
        self._check_budget(self.budget_pages, "budget_pages")
        if self.max_budget_pages is not None:
            self._check_budget(self.max_budget_pages, "max_budget_pages")
        if any(i < 0 for i in self.dense_layers):
            raise ValueError(f"dense_layers={self.dense_layers} must hold layer indices >= 0")
        if self.budget_schedule is not None:
            if len(self.budget_schedule) == 0:
                raise ValueError("budget_schedule=() is empty; pass None for a fixed budget")
            previous = 0
            for up_to, budget in self.budget_schedule:
                if up_to <= previous:
                    raise ValueError(
                        f"budget_schedule={self.budget_schedule}: context_tokens_up_to must be positive "
                        f"and strictly ascending, got {up_to} after {previous}"
                    )
                self._check_budget(budget, f"budget_schedule step ({up_to}, {budget})")
                previous = up_to

    def _check_budget(self, budget: int, what: str) -> None:
        floor = self.sink_pages + self.local_pages
        if budget < floor:
            raise ValueError(
                f"{what}: budget {budget} < sink_pages + local_pages = {floor}; "
                f"a budget must be at least {floor} pages"
            )

    @property
    def max_budget(self) -> int:
        """Largest budget any context can get: the width of every page list."""
        budgets = [self.budget_pages, self.max_budget_pages or 0] + [b for _, b in (self.budget_schedule or ())]
        return max(budgets)

    def budget_for(self, context_tokens: int) -> int:
        """Budget (pages) for one context length, on the host."""
        for up_to, budget in self.budget_schedule or ():
            if context_tokens <= up_to:
                return budget
        return self.budget_pages

    @property
    def topk_max(self) -> int:
        """Pages the indexer chooses at most: the budget left after sink and local pages."""
        return self.max_budget - self.sink_pages - self.local_pages

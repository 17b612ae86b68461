"""`BudgetGuard`: the live sparse budget schedule of a run (``rollout.sparse_guard``).

Each step it reads the batch's per-token acceptance rate (``batch.alpha``, or ``batch.alpha_est`` with
``signal: estimate``; made with the trainer's log-probs), takes the 5th percentile per context-length bin, lets ``algos.budget_guard.guard_update``
decide, and hands a changed schedule to the rollout engines for the next step (they take it without a
rebuild: ``Engine.set_budget_schedule``). Its state goes into checkpoints.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from vortex_rl.rollout import EngineConfig
from vortex_rl.sparse import SparseConfig
from vortex_rl.trainers.algos.acceptance import percentile_by_position
from vortex_rl.trainers.algos.budget_guard import GuardState, dense_pages, guard_bins, guard_update
from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.config.rollout import SparseGuardConfig


class BudgetGuard:
    """Per-bin budgets over contexts of ``1..max_tokens`` tokens, starting from (and never below) what
    ``sparse`` gives each bin's longest context.

    Parameters
    ----------
    config: ``rollout.sparse_guard`` (enabled).  sparse: ``rollout.sparse``.
    max_tokens: the longest context (prompt + response).
    """

    def __init__(self, config: SparseGuardConfig, sparse: SparseConfig, max_tokens: int) -> None:
        self.config, self.sparse = config, sparse
        self.bins = guard_bins(max_tokens, config.bin_tokens)
        self.floors = [sparse.budget_for(end) for _, end in self.bins]
        cap = config.max_budget_pages
        # "Up to dense": every page of the bin's longest context, which is never past max_tokens (the
        # last bin may end beyond it, and the engine's page lists are sized for the largest ceiling).
        self.ceilings = [max(floor, min(dense_pages(min(end, max_tokens), sparse.page_size), cap or 1 << 30))
                         for floor, (_, end) in zip(self.floors, self.bins)]
        self.state = GuardState(list(self.floors))

    def schedule(self) -> tuple[tuple[tuple[int, int], ...], int]:
        """``(budget_schedule, budget_pages)`` of the current budgets (the last bin's budget also covers
        anything longer)."""
        return tuple((end, b) for (_, end), b in zip(self.bins, self.state.budgets)), self.state.budgets[-1]

    def engine_sparse_config(self) -> SparseConfig:
        """The engine's ``SparseConfig``: the current schedule, page lists sized for the largest ceiling."""
        schedule, budget_pages = self.schedule()
        return dataclasses.replace(self.sparse, budget_schedule=schedule, budget_pages=budget_pages,
                                   max_budget_pages=max(self.ceilings))

    def signal(self, batch: RolloutBatch) -> torch.Tensor | None:
        """The per-token acceptance rate the floor applies to (``rollout.sparse_guard.signal``)."""
        return batch.alpha_est if self.config.signal == "estimate" else batch.alpha

    def bin_alpha_p5(self, batch: RolloutBatch) -> list[float | None]:
        """The 5th percentile of the guard's signal per bin; a token's context is prompt + its response
        index (the tokens cached when it was sampled), ``None`` for bins without tokens."""
        by_bin = percentile_by_position(self.signal(batch), batch.response_mask, bin_tokens=self.config.bin_tokens,
                                        offsets=batch.prompt_lens - 1)
        return [by_bin.get(b) for b in self.bins]

    def observe(self, batch: RolloutBatch, worker) -> dict[str, float]:
        """Log the budgets this batch was generated with and its per-bin ``alpha_p5``, decide, and send a
        changed schedule to ``worker`` (``set_budget_schedule``) for the next step."""
        if self.signal(batch) is None:
            raise ValueError(f"rollout.sparse_guard (signal={self.config.signal}) needs the batch's acceptance rate: "
                             "rollout.logprobs > 0 on both sides")
        p5 = self.bin_alpha_p5(batch)
        metrics = {f"rollout/budget_pages/pos_{a}-{b}": float(budget)
                   for (a, b), budget in zip(self.bins, self.state.budgets)}
        metrics.update({f"rollout/guard_alpha_p5/pos_{a}-{b}": v for (a, b), v in zip(self.bins, p5) if v is not None})
        before = list(self.state.budgets)
        cfg = self.config
        self.state = guard_update(self.state, p5, min_alpha_p5=cfg.min_alpha_p5, hysteresis=cfg.hysteresis,
                                  patience=cfg.patience, floors=self.floors, ceilings=self.ceilings)
        changes = [(bin_, old, new) for bin_, old, new in zip(self.bins, before, self.state.budgets) if old != new]
        metrics["rollout/budget_changes"] = float(len(changes))
        if changes:
            worker.set_budget_schedule(*self.schedule())
            tqdm.write("budget guard: " + ", ".join(f"pos {a}-{b}: {old} -> {new} pages"
                                                   for (a, b), old, new in changes))
        return metrics

    def state_dict(self) -> dict[str, list[int]]:
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        loaded = GuardState(**state)
        if len(loaded.budgets) != len(self.bins):
            raise ValueError(f"the checkpoint's budget guard has {len(loaded.budgets)} bins, this run {len(self.bins)} "
                             "(rollout.sparse_guard.bin_tokens or the sequence length changed)")
        self.state = loaded


def make_budget_guard(config: GRPOConfig) -> BudgetGuard | None:
    """The run's guard, or ``None`` without ``rollout.sparse_guard.min_alpha_p5``."""
    if not config.rollout.sparse_guard.enabled:
        return None
    return BudgetGuard(config.rollout.sparse_guard, config.rollout.sparse, config.data.max_sequence_length)


def guarded_engine_config(config: GRPOConfig, settings: EngineConfig) -> EngineConfig:
    """``settings`` with the guard's starting schedule and page-list width when the run has a guard."""
    guard = make_budget_guard(config)
    return settings if guard is None else dataclasses.replace(settings, sparse=guard.engine_sparse_config())

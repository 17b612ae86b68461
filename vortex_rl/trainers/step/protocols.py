"""The small protocols a GRPO step is written against, and the parts a run is assembled from.

``local`` implements them in this process (``LocalLearner``, ``LocalRolloutWorker``, ``LocalWeightSync``,
``RewardPool``); ``ray`` implements them over Ray actors (``RayLearnerGroup``, ``RayRolloutGroup``,
``RayWeightSync``, ``RayRewardPool``). The step code never knows which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import torch

from vortex_rl.data.reward_pool import RewardResult
from vortex_rl.rollout import Completion, SamplingParams
from vortex_rl.trainers.batch import RolloutBatch


class Learner(Protocol):
    """The dense actor: scores a batch (``old_log_probs``, top-k, entropy), trains on it, hands out weights."""

    def compute_log_probs(self, batch: RolloutBatch) -> None: ...
    def update(self, batch: RolloutBatch) -> dict[str, float]: ...
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def save_model(self, directory: Path, tokenizer) -> None: ...


class RolloutWorker(Protocol):
    """One or more sparse rollout engines behind one interface."""

    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams], n: int
                 ) -> list[list[Completion]]: ...
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...
    def weights_checksum(self) -> float: ...
    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None: ...
    def sleep(self) -> None: ...
    def wake(self) -> None: ...
    def stats(self) -> dict[str, float]: ...

    @property
    def dtype(self) -> torch.dtype: ...


class RewardScorer(Protocol):
    """Scores responses against reference answers (time-outs and errors score 0 and are counted)."""

    def score(self, responses: Sequence[str], ground_truths: Sequence[str]) -> RewardResult: ...
    def close(self) -> None: ...


class WeightSync(Protocol):
    """Called after each update: the learner's weights into every engine, checked by checksum
    (``step.weight_check``); returns ``rollout/*`` metrics."""

    def __call__(self) -> dict[str, float]: ...


@dataclass
class RunParts:
    """What an orchestrator (``local`` or ``ray``) builds for a run; ``close`` releases its processes."""

    learner: Learner
    worker: RolloutWorker
    reward_pool: RewardScorer
    weight_sync: WeightSync
    metrics: dict[str, float] = field(default_factory=dict)  # step-0 metrics of setting up (warm-up)
    close: Callable[[], None] = lambda: None

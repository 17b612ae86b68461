"""`LocalRolloutWorker`: the sparse rollout engine in this process, behind ``step.protocols.RolloutWorker``."""

from __future__ import annotations

import tempfile
from typing import Any, Iterable, Sequence

import torch

from vortex_rl.rollout import Completion, Engine, SamplingParams, weight_buckets
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.step.budget_guard import guarded_engine_config


def build_engine(model: torch.nn.Module, tokenizer: Any, config: GRPOConfig, device: torch.device):
    """The rollout engine ``rollout.engine`` names, starting from the actor's weights.

    SGLang loads models from disk, so for ``sglang`` the actor is saved to a temporary directory first;
    later weights arrive through ``update_weights`` like with the embedded engine.
    """
    settings = guarded_engine_config(config, config.engine_config(str(device)))
    if config.rollout.engine == "sglang":
        from vortex_rl.rollout.sglang import make_sglang_engine

        model_dir = tempfile.mkdtemp(prefix="vortex-rl-sglang-")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        return make_sglang_engine(model_dir, settings)
    return Engine.from_pretrained(model, tokenizer=tokenizer, config=settings)


class LocalRolloutWorker:
    """Wraps ``vortex_rl.rollout.Engine``; weights arrive as Hugging Face named tensors, in buckets.

    Parameters
    ----------
    model: the actor (a ``transformers`` model) whose weights the engine starts from.
    tokenizer: decodes completions.
    config: the run's config (``rollout.*``, ``data.max_*_length``).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: GRPOConfig, device: torch.device) -> None:
        self.engine = build_engine(model, tokenizer, config, device)
        self.bucket_bytes = config.rollout.update_weights_bucket_mb * 2**20
        # SGLang buckets an update itself, inside one weight-update session with one cache flush; a
        # call per bucket would open a session (and flush) per bucket.
        self.engine_buckets_weights = config.rollout.engine == "sglang"
        self.eos_token_ids = sorted(self.engine.eos_token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams], n: int
                 ) -> list[list[Completion]]:
        """``n`` completions per prompt; ``params[i]`` samples prompt ``i``."""
        return self.engine.generate([list(p) for p in prompts], params, n=n, use_tqdm=False)

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Send the weights bucket by bucket (each bucket is checked and loaded atomically by the engine)."""
        if self.engine_buckets_weights:
            self.engine.update_weights(named_tensors)
            return
        for bucket in weight_buckets(named_tensors, self.bucket_bytes):
            self.engine.update_weights(bucket)

    def weights_checksum(self) -> float:
        return self.engine.state_checksum()

    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None:
        """The sparse budgets of the next generations (the budget guard's schedule)."""
        self.engine.set_budget_schedule(budget_schedule, budget_pages)

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()

    def stats(self) -> dict[str, float]:
        return self.engine.stats.as_dict()

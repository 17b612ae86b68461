"""`LocalRolloutWorker`: the sparse rollout engine in this process, behind the ``RolloutWorker`` protocol."""

from __future__ import annotations

import tempfile
from typing import Any, Iterable, Protocol, Sequence

import torch

from vortex_rl.rollout import Completion, Engine, EngineConfig, SamplingParams, weight_buckets, weight_checksum
from vortex_rl.trainers.config import GRPOConfig


class RolloutWorker(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams], n: int
                 ) -> list[list[Completion]]: ...
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...
    def weights_checksum(self) -> float: ...
    def sleep(self) -> None: ...
    def wake(self) -> None: ...
    def stats(self) -> dict[str, float]: ...

    @property
    def dtype(self) -> torch.dtype: ...


def engine_config(config: GRPOConfig, device: torch.device) -> EngineConfig:
    """The engine's config from ``rollout.*``: room for the longest prompt plus response."""
    rollout, data = config.rollout, config.data
    return EngineConfig(
        flow=rollout.flow, sparse=rollout.sparse, max_num_seqs=rollout.max_num_seqs,
        max_num_batched_tokens=rollout.max_num_batched_tokens,
        max_model_len=data.max_prompt_length + data.max_response_length,
        kv_cache_memory_gb=rollout.kv_cache_memory_gb, gpu_memory_utilization=rollout.gpu_memory_utilization,
        dtype=rollout.dtype, device=str(device), enforce_eager=rollout.enforce_eager,
        kernel_backend=rollout.kernel_backend, seed=config.trainer.seed,
    )



def build_engine(model: torch.nn.Module, tokenizer: Any, config: GRPOConfig, device: torch.device):
    """The rollout engine ``rollout.engine`` names, starting from the actor's weights.

    SGLang loads models from disk, so for ``sglang`` the actor is saved to a temporary directory first;
    later weights arrive through ``update_weights`` like with the embedded engine.
    """
    settings = engine_config(config, device)
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
        self.eos_token_ids = sorted(self.engine.eos_token_ids)

    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams], n: int
                 ) -> list[list[Completion]]:
        """``n`` completions per prompt; ``params[i]`` samples prompt ``i``."""
        return self.engine.generate([list(p) for p in prompts], params, n=n, use_tqdm=False)

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Send the weights bucket by bucket (each bucket is checked and loaded atomically by the engine)."""
        for bucket in weight_buckets(named_tensors, self.bucket_bytes):
            self.engine.update_weights(bucket)

    def weights_checksum(self) -> float:
        return self.engine.state_checksum()

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()

    def stats(self) -> dict[str, float]:
        return self.engine.stats.as_dict()


def check_weights_in_sync(worker: RolloutWorker, named_tensors: Iterable[tuple[str, torch.Tensor]],
                          dtype: torch.dtype, *, rel_tol: float = 1e-6) -> float:
    """Compare the engine's weight checksum with the trainer's (cast to the engine's dtype); raise on mismatch.

    Returns the relative difference. Sums of identical elements differ only by summation order.
    """
    expected = weight_checksum((name, t.to(dtype)) for name, t in named_tensors)
    actual = worker.weights_checksum()
    relative = abs(actual - expected) / max(abs(expected), 1.0)
    if relative > rel_tol:
        raise RuntimeError(
            f"rollout engine weights differ from the actor's after update_weights: checksum {actual!r} vs "
            f"{expected!r} (relative difference {relative:.3g} > {rel_tol})"
        )
    return relative

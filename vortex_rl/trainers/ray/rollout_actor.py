"""`RolloutActor`: a ``LocalRolloutWorker`` (one engine) in its own process, and the receiving end of the
weight sync. ``RayRolloutGroup`` (``ray/rollout_group.py``) shards prompts over these actors."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from vortex_rl.rollout import Completion, SamplingParams
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.ray.learner_actor import actor_device
from vortex_rl.trainers.ray.cluster import import_ray
from vortex_rl.trainers.distributed.weight_transport import BroadcastGroup, TensorSpec, WeightLayout, open_cuda, unflatten_bucket

ray = import_ray()

# ``progress`` answers from its own thread while ``generate`` runs in the default group.
CONCURRENCY_GROUPS = {"control": 1}


class RolloutActor:
    """Rollout worker ``index``: builds its engine from ``model.path`` (or a checkpoint's ``model/``); the
    trainer then syncs the learner's weights into it.

    Parameters
    ----------
    config: the run's config (``rollout.*``).
    use_gpu: the actor holds (a share of) a GPU.
    num_threads: torch CPU threads.
    checkpoint_dir: a saved ``model/`` directory (resuming), else ``None``.
    """

    def __init__(self, config: GRPOConfig, index: int, *, use_gpu: bool, num_threads: int,
                 checkpoint_dir: str | None) -> None:
        from vortex_rl.trainers.local.model_loader import load_actor, load_tokenizer
        from vortex_rl.trainers.local.rollout_worker import LocalRolloutWorker

        torch.set_num_threads(num_threads)
        self.index, self.device = index, actor_device(use_gpu)
        if config.rollout.engine == "sglang":
            # Before loading the model: SGLang's version, the plugin's entry point in this actor's
            # environment (SGLang's scheduler processes load it from there) and the backend registered
            # here, each with a clear error; sglang.Engine then starts inside this actor.
            from vortex_rl.rollout.sglang.plugin import prepare_process

            prepare_process()
        tokenizer = load_tokenizer(config.model, checkpoint_dir=checkpoint_dir)
        model = load_actor(config.model, tokenizer, device=self.device, seed=config.trainer.seed,
                           checkpoint_dir=checkpoint_dir)
        self.worker = LocalRolloutWorker(model, tokenizer, config, self.device)
        self.broadcast: BroadcastGroup | None = None

    def pid(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="control")
    def progress(self) -> dict[str, float]:
        """Whether the embedded engine has requests in flight, and its tokens generated so far (callable
        during ``generate``)."""
        engine = self.worker.engine
        scheduler = getattr(engine, "scheduler", None)  # the SGLang adapter keeps its queue elsewhere
        return {"in_flight": float(scheduler is not None and scheduler.has_work()),
                "generated_tokens": float(self.worker.stats().get("generated_tokens", 0))}

    # ------------------------------------------------------------------- the RolloutWorker protocol
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                 n: int) -> list[list[Completion]]:
        return self.worker.generate(prompts, params, n)

    def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        self.worker.update_weights(named_tensors)

    def weights_checksum(self) -> float:
        return self.worker.weights_checksum()

    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None:
        self.worker.set_budget_schedule(budget_schedule, budget_pages)

    def dtype(self) -> torch.dtype:
        return self.worker.dtype

    def sleep(self) -> None:
        self.worker.sleep()

    def wake(self) -> None:
        self.worker.wake()

    def stats(self) -> dict[str, float]:
        return self.worker.stats()

    # ----------------------------------------------------------------------------- weight receiving
    def load_bucket(self, specs: Sequence[TensorSpec], payload: Any) -> None:
        """One bucket from the colocated learner rank: a flat CPU tensor, or a CUDA IPC handle of one."""
        flat = payload if isinstance(payload, torch.Tensor) else open_cuda(payload)
        self.worker.engine.update_weights(unflatten_bucket(flat.to(self.device), specs))
        if flat.is_cuda:
            torch.cuda.synchronize()  # the learner frees the buffer once this returns

    def join_broadcast(self, address: tuple[str, int], rank: int, world_size: int, generation: int) -> None:
        self.broadcast = None  # the previous group (a worker restarted) is dropped
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.broadcast = BroadcastGroup(*address, rank=rank, world_size=world_size, backend=backend,
                                        generation=generation)

    def receive_broadcast(self, layout: WeightLayout) -> None:
        """Every bucket from learner rank 0, loaded as it arrives."""
        if self.broadcast is None:
            raise RuntimeError(f"rollout worker {self.index} is in no broadcast group: join_broadcast first")
        for index, specs in enumerate(layout.buckets):
            flat = torch.empty(layout.bucket_numel(index), dtype=layout.dtype, device=self.device)
            self.broadcast.broadcast(flat)
            self.worker.engine.update_weights(unflatten_bucket(flat, specs))

"""`LearnerActor`: one rank of the learner in its own process (a Ray actor), and the sending end of the
weight sync. ``RayLearnerGroup`` (``ray/learner_group.py``) drives the ranks from the trainer process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.distributed.weight_transport import (BroadcastGroup, WeightLayout, free_port, host_store, iter_layout,
                                                 share_cuda)


def actor_device(use_gpu: bool) -> torch.device:
    """The device of an actor: Ray exposes only the actor's GPU, so it is ``cuda:0``."""
    if not use_gpu:
        return torch.device("cpu")
    torch.cuda.set_device(0)
    return torch.device("cuda", 0)


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


class LearnerActor:
    """Learner rank ``rank`` of ``world_size``: a ``FSDPLearner`` once ``setup`` has run on every rank.

    Parameters
    ----------
    config: the run's config.
    use_gpu: the actor holds a GPU (NCCL) or runs on CPU (gloo).
    num_threads: torch CPU threads (the actor's CPU share).
    """

    def __init__(self, config: GRPOConfig, rank: int, world_size: int, *, use_gpu: bool, num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = actor_device(use_gpu)
        self.learner = None
        self.store = None
        self.broadcast = None

    def pid(self) -> int:
        import os

        return os.getpid()

    def rendezvous(self) -> tuple[str, int]:
        """A free address on this node for the learners' process group (asked of rank 0)."""
        return node_ip(), free_port()

    def setup(self, master: tuple[str, int], checkpoint_dir: str | None, warmup_prompts: Sequence | None) -> dict:
        """Join the process group, load the actor (rank 0 runs the SFT warm-up when given prompts, then
        every rank takes rank 0's weights) and shard it. Returns the warm-up metrics (rank 0)."""
        from vortex_rl.trainers.local.model_loader import autocast, load_actor, load_tokenizer
        from vortex_rl.trainers.distributed.fsdp_learner import FSDPLearner
        from vortex_rl.trainers.local.warmup import sft_warmup

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{master[0]}:{master[1]}", rank=self.rank,
                                world_size=self.world_size,
                                device_id=self.device if self.device.type == "cuda" else None)
        config = self.config
        self.tokenizer = load_tokenizer(config.model, checkpoint_dir=checkpoint_dir)
        model = load_actor(config.model, self.tokenizer, device=self.device, seed=config.trainer.seed,
                           checkpoint_dir=checkpoint_dir)
        metrics = {}
        if warmup_prompts is not None and self.rank == 0:
            metrics = sft_warmup(model, self.tokenizer, warmup_prompts, config.sft_warmup, device=self.device,
                                 seed=config.trainer.seed, precision=lambda: autocast(config.model, self.device))
        with torch.no_grad():  # one set of starting weights, whatever each rank loaded or warmed up
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)
        self.learner = FSDPLearner(model, config, self.device)
        return metrics

    # --------------------------------------------------------------------------- the Learner protocol
    def compute_log_probs(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        return self.learner.rank_log_probs(batch)

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        return self.learner.update(batch)

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The full weights on rank 0 (CPU), nothing elsewhere; every rank must be called."""
        weights = [(name, tensor.cpu()) for name, tensor in self.learner.named_weights()]
        return weights if self.rank == 0 else []

    def weight_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(name, tuple(p.shape)) for name, p in self.learner.model.named_parameters()]

    def state_dict(self) -> dict:
        state = self.learner.state_dict()  # a collective: every rank takes part, rank 0 holds the result
        return state if self.rank == 0 else {}

    def load_state_dict(self, state: dict | None) -> None:
        self.learner.load_state_dict(state)

    def save_model(self, directory: str) -> None:
        self.learner.save_model(Path(directory), self.tokenizer)

    # ------------------------------------------------------------------------------- weight sending
    def _buckets(self, layout: WeightLayout):
        from vortex_rl.trainers.distributed.fsdp_learner import full_tensor

        params = dict(self.learner.model.named_parameters())
        return iter_layout(layout, lambda name: full_tensor(params[name]))

    def send_colocated(self, layout: WeightLayout, rollout: Any) -> dict[str, Any]:
        """Every rank gathers each bucket and hands it to its colocated rollout worker: a CUDA IPC handle
        on GPU, the object store on CPU. Returns the checksum of what was sent, the first error and whether
        the rollout worker died (after an error the gathers go on so the other ranks are not left waiting)."""
        import ray

        checksum, error, dead = 0.0, None, False
        for index, flat in enumerate(self._buckets(layout)):
            checksum += float(flat.double().sum())
            if error is not None:
                continue
            try:
                payload = share_cuda(flat) if flat.is_cuda else flat
                ray.get(rollout.load_bucket.remote(layout.buckets[index], payload))
            except ray.exceptions.RayError as err:
                error, dead = f"{type(err).__name__}: {err}"[:2000], isinstance(err, ray.exceptions.RayActorError)
        return {"checksum": checksum, "error": error, "dead": dead}

    def open_broadcast(self, world_size: int) -> tuple[str, int]:
        """Rank 0 serves the broadcast group's rendezvous store; returns its address."""
        if self.store is None:
            host = node_ip()
            self.store = host_store(host, world_size=world_size, timeout_s=300.0)
            self.store_address = (host, self.store.port)
        return self.store_address

    def join_broadcast(self, generation: int, world_size: int) -> None:
        self.broadcast = None  # the previous group (a worker restarted) is dropped
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.broadcast = BroadcastGroup(*self.store_address, rank=0, world_size=world_size, backend=backend,
                                        generation=generation, store=self.store)

    def send_broadcast(self, layout: WeightLayout) -> dict[str, Any]:
        """Every rank gathers each bucket; rank 0 broadcasts it to the rollout workers."""
        checksum, error = 0.0, None
        for flat in self._buckets(layout):
            checksum += float(flat.double().sum())
            if self.rank != 0 or error is not None:
                continue
            try:
                self.broadcast.broadcast(flat)
            except RuntimeError as err:  # a receiver died mid-transfer
                error = f"{type(err).__name__}: {err}"[:500]
        return {"checksum": checksum, "error": error}

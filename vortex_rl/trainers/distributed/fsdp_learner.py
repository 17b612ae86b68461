"""`FSDPLearner`: one rank of the data-parallel learner, FSDP2 (``fully_shard``) across the ranks.

Every rank receives the whole step batch and works on its contiguous share of each mini-batch's rows.
Token and sequence counts are taken over the whole mini-batch, and the per-rank losses add up
(FSDP2 averages gradients over ranks, so each rank's loss is scaled by the world size): the update
equals ``LocalLearner``'s on the whole batch up to summation order. FSDP2 gathers parameters in every
forward, so all ranks must run the same number of micro-batches; a rank with fewer repeats one with
zero weight. Works with NCCL on GPUs and with gloo on CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.learner import LocalLearner

LOG_PROB_FIELDS = ("old_log_probs", "entropy", "alpha", "alpha_upper", "alpha_est", "ref_log_probs")


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly FSDP2-sharded) parameter; a collective for sharded ones."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()


def shard_model(model: torch.nn.Module, device: torch.device) -> None:
    """``fully_shard`` each decoder layer, then the whole model, over all ranks of the default group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in getattr(getattr(model, "model", None), "layers", ()):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def rank_rows(num_rows: int, rank: int, world_size: int) -> torch.Tensor:
    """The contiguous share of ``num_rows`` rows that ``rank`` works on (sizes differ by at most one)."""
    if num_rows < world_size:
        raise ValueError(f"{num_rows} rows cannot be split over {world_size} learner ranks; raise "
                         "actor.ppo_mini_batch_size or data.train_batch_size, or lower cluster.num_learner_ranks")
    return torch.arange(num_rows).tensor_split(world_size)[rank]


class FSDPLearner(LocalLearner):
    """``LocalLearner`` on rank ``dist.get_rank()`` of an initialised default process group.

    Parameters
    ----------
    model: the actor, identical on every rank, on ``device``; sharded here.
    config, device: as for ``LocalLearner``.
    """

    def __init__(self, model: torch.nn.Module, config: GRPOConfig, device: torch.device) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # the KL reference is copied before sharding: FSDP2 modules cannot be deep-copied
        self._unsharded_ref = copy.deepcopy(model) if config.actor.use_kl_loss else None
        shard_model(model, device)
        super().__init__(model, config, device)

    def _reference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        ref, self._unsharded_ref = self._unsharded_ref, None
        shard_model(ref, self.device)
        return ref.eval().requires_grad_(False)

    # ---------------------------------------------------------------------------------- collectives
    def _all_reduce(self, values: list[float], op) -> list[float]:
        if not values:
            return []
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def _micro_batches(self, batch: RolloutBatch) -> list[torch.Tensor]:
        """This rank's micro-batches, padded (repeating the last) to the most any rank has."""
        local = super()._micro_batches(batch)
        count = int(self._all_reduce([float(len(local))], dist.ReduceOp.MAX)[0])
        return local + [local[-1]] * (count - len(local))

    # ------------------------------------------------------------------------------------- learning
    def rank_log_probs(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """``compute_log_probs`` on this rank's rows of ``batch``: the filled fields for those rows."""
        rows = rank_rows(len(batch), self.rank, self.world_size)
        part = batch.select(rows)
        self.compute_log_probs(part)
        return {name: getattr(part, name) for name in LOG_PROB_FIELDS if getattr(part, name) is not None}

    def _optimizer_step(self, mini: RolloutBatch, mask: torch.Tensor) -> dict[str, float]:
        num_tokens = float(mask.sum().clamp(min=1))  # every rank holds the whole mini-batch: global counts
        rows = rank_rows(len(mini), self.rank, self.world_size)
        part, part_mask = mini.select(rows), mask[rows]
        real = len(LocalLearner._micro_batches(self, part))
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, index in enumerate(self._micro_batches(part)):
            # FSDP2 averages gradients over ranks; padding micro-batches only keep the collectives in step
            mb_metrics = self._backward(part.select(index), part_mask[index], num_tokens=num_tokens,
                                        num_seqs=float(len(mini)), scale=self.world_size if i < real else 0.0)
            if i < real:
                for key, value in mb_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        keys = sorted(sums)
        metrics = dict(zip(keys, self._all_reduce([sums[k] for k in keys], dist.ReduceOp.SUM)))
        metrics.update(self._apply_gradients())  # the clipped norm is global: every rank takes the same step
        return metrics

    # ---------------------------------------------------------------------------------- weights out
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full parameters under their Hugging Face names (a gather per tensor: every rank must iterate)."""
        for name, param in self.model.named_parameters():
            yield name, full_tensor(param)

    def state_dict(self) -> dict:
        """``LocalLearner.state_dict``'s format (optimizer state keyed by parameter index), complete on rank 0
        only; a collective."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        state: dict[str, Any] = {"optimizer": self._indexed(optim) if self.rank == 0 else {},
                                 "scheduler": self.scheduler.state_dict()}
        if self.ref_model is not None:
            state["ref_model"] = get_model_state_dict(self.ref_model, options=options)
        return state

    def load_state_dict(self, state: dict | None) -> None:
        """Load a ``state_dict`` given on rank 0 (``None`` elsewhere); the shards are broadcast from it."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        if self.rank == 0 and self.ref_model is not None and "ref_model" not in state:
            raise ValueError("the checkpoint has no KL reference weights; it was saved with actor.use_kl_loss=false")
        scheduler = [state["scheduler"] if self.rank == 0 else None]
        dist.broadcast_object_list(scheduler, src=0)
        set_optimizer_state_dict(self.model, self.optimizer, options=options,
                                 optim_state_dict=self._named(state["optimizer"]) if self.rank == 0 else {})
        self.scheduler.load_state_dict(scheduler[0])
        if self.ref_model is not None:
            set_model_state_dict(self.ref_model, state["ref_model"] if self.rank == 0 else {}, options=options)

    def save_model(self, directory: Path, tokenizer) -> None:
        """Rank 0 writes the gathered weights with ``save_pretrained`` (a collective; the directory must be
        on a file system rank 0 can reach)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:
            self.model.save_pretrained(directory, state_dict=weights, safe_serialization=True)
            tokenizer.save_pretrained(directory)

    def _param_names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def _indexed(self, optim: dict) -> dict:
        """FQN-keyed optimizer state (``torch.distributed.checkpoint``) -> index-keyed (``torch.optim``)."""
        index = {name: i for i, name in enumerate(self._param_names())}
        return {"state": {index[name]: value for name, value in optim["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]]}

    def _named(self, optim: dict) -> dict:
        names = self._param_names()
        return {"state": {names[int(i)]: value for i, value in optim["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim["param_groups"]]}

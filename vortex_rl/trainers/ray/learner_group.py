"""`RayLearnerGroup`: the learner ranks as Ray actors, behind the ``Learner`` protocol.

The trainer process puts each step batch in the object store once; every rank reads it and works on
its share of the rows (``FSDPLearner``). A rank that dies ends the run with ``LearnerFailure``:
learner state cannot be rebuilt mid-step, but checkpoints are written atomically, so the last one is
complete and ``trainer.resume=auto`` continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from vortex_rl.trainers.batch import RolloutBatch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.ray.learner_actor import LearnerActor
from vortex_rl.trainers.ray.placement import Placement
from vortex_rl.trainers.ray.cluster import import_ray


class LearnerFailure(RuntimeError):
    """A learner rank died; the run stopped (resume it from its last checkpoint with ``trainer.resume=auto``)."""


class RayLearnerGroup:
    """``cluster.num_learner_ranks`` ``LearnerActor``\\ s in ``placement``, set up and ready to train.

    Parameters
    ----------
    config: the run's config.
    placement: the reserved placement groups.
    name_prefix: prefix of the actors' names (``<prefix>learner-<rank>``), unique per run.
    checkpoint_dir: a saved ``model/`` directory to start from (resuming), else ``model.path``.
    warmup_prompts: training prompts for the SFT warm-up (run on rank 0), or ``None`` for none.
    """

    def __init__(self, config: GRPOConfig, placement: Placement, *, name_prefix: str, checkpoint_dir: str | None,
                 warmup_prompts: Sequence | None) -> None:
        ray = import_ray()
        plan = placement.plan
        remote = ray.remote(LearnerActor)
        self.actors = [
            remote.options(name=f"{name_prefix}learner-{rank}", max_restarts=0, **placement.options("learner", rank))
            .remote(config, rank, plan.num_learner_ranks, use_gpu=plan.use_gpu,
                    num_threads=max(1, int(plan.cpus_per_worker)))
            for rank in range(plan.num_learner_ranks)
        ]
        master = self.gather([self.actors[0].rendezvous.remote()], "rendezvous")[0]
        prompts = ray.put(list(warmup_prompts)) if warmup_prompts is not None else None
        self.setup_metrics: dict[str, float] = self._all("setup", master, checkpoint_dir, prompts)[0]

    # ------------------------------------------------------------------------------------ plumbing
    def submit(self, method: str, *args: Any) -> list:
        """Call ``method`` on every rank; returns the object refs, rank order."""
        return [getattr(actor, method).remote(*args) for actor in self.actors]

    def gather(self, refs: list, what: str, ranks: list[int] | None = None) -> list:
        """Results of ``refs`` (of ``ranks``, default one per rank in order), raising ``LearnerFailure`` as
        soon as a rank is found dead: the others may be blocked in a collective and would never return."""
        ray = import_ray()
        rank_of = dict(zip(refs, ranks if ranks is not None else range(len(refs))))
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as err:
                raise LearnerFailure(
                    f"learner rank {rank_of[done[0]]} died during {what}; the run stops. Checkpoints are written "
                    f"atomically, so the last one is complete: rerun with trainer.resume=auto to continue "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        return ray.get(refs)

    def _all(self, method: str, *args: Any) -> list:
        return self.gather(self.submit(method, *args), method)

    # --------------------------------------------------------------------------- the Learner protocol
    def compute_log_probs(self, batch: RolloutBatch) -> None:
        """Fill ``batch``'s ``old_log_probs``, ``entropy`` (and top-k, reference) fields from the ranks' rows."""
        ray = import_ray()
        parts = self._all("compute_log_probs", ray.put(batch))
        for name in parts[0]:  # each rank holds a contiguous block of rows, in rank order
            setattr(batch, name, torch.cat([part[name] for part in parts]))

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        ray = import_ray()
        return self._all("update", ray.put(batch))[0]

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The full weights, gathered to rank 0 and copied here (use the weight sync for the engines)."""
        yield from self._all("named_weights")[0]

    def weight_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return self.gather([self.actors[0].weight_shapes.remote()], "weight_shapes")[0]

    def state_dict(self) -> dict:
        return self._all("state_dict")[0]

    def load_state_dict(self, state: dict) -> None:
        ray = import_ray()
        ref = ray.put(state)
        refs = [actor.load_state_dict.remote(ref if rank == 0 else None) for rank, actor in enumerate(self.actors)]
        self.gather(refs, "load_state_dict")

    def save_model(self, directory: Path, tokenizer: Any = None) -> None:
        """Rank 0 writes the model and its own copy of the tokenizer (the same files as ``tokenizer``)."""
        self._all("save_model", str(directory))

    def pids(self) -> list[int]:
        return self._all("pid")

    def close(self) -> None:
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

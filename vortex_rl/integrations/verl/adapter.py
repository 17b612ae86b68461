"""`VortexRolloutAdapter`: the trainer-side ``BaseRollout`` of ``rollout.name=vortex`` (verl builds one in
every trainer worker, ``engine_workers.py`` ~648-670, and calls it from ``update_weights`` ~728-825).

``update_weights`` drains verl's per-tensor generator on every rank (FSDP gathers inside it, a
collective); the replica's leader rank packs what it drains into buckets for the server
(``weight_sync``) and commits them with its checksum. ``resume``/``release`` free and restore the
engine's KV cache (its weights stay resident).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Generator

import torch
from verl.workers.rollout.base import BaseRollout

from vortex_rl.devices import torch_dtype
from vortex_rl.integrations.verl.weight_sync import pack_bucket, trainer_tensors
from vortex_rl.rollout import weight_buckets

logger = logging.getLogger(__name__)

BUCKET_BYTES = 512 << 20


class VortexRolloutAdapter(BaseRollout):
    """Parameters as verl's ``BaseRollout``; ``server_lookup(replica_rank)`` returns the replica's server
    handle (default: the named Ray actor ``replica.server_name``); ``replica_rank`` is used when verl
    passes no device mesh (standalone workers)."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1,
                 server_lookup: Callable[[int], Any] | None = None, **kwargs):
        super().__init__(config, model_config, device_mesh)
        if device_mesh is not None:
            dp, *rest = device_mesh.get_coordinate()  # mesh dims (dp, infer_tp, infer_pp): a replica per dp
            self.replica_rank = int(dp)
            self.is_leader_rank = all(int(c) == 0 for c in rest)
        else:
            self.replica_rank = replica_rank
            self.is_leader_rank = int(os.environ.get("RANK", "0")) == 0
        if self.replica_rank < 0:
            raise ValueError(f"replica_rank={self.replica_rank}: pass a device mesh or replica_rank >= 0")
        self._server_lookup = server_lookup or _named_server
        self._server = None
        self.dtype = torch_dtype(str(self.config.dtype), torch.device("cuda" if torch.cuda.is_available() else "cpu"),
                                 auto="bfloat16")
        hf_config = getattr(self.model_config, "hf_config", None)
        self.tied_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False))
        self.bucket_bytes = int(getattr(getattr(self.config, "checkpoint_engine", None),
                                        "update_weights_bucket_megabytes", BUCKET_BYTES >> 20)) << 20
        self.last_update: dict[str, float] | None = None

    @property
    def server(self):
        if self._server is None:  # looked up late: verl launches the servers after building the adapters
            self._server = self._server_lookup(self.replica_rank)
        return self._server

    async def resume(self, tags: list[str]):
        """``"kv_cache"``: re-allocate the engine's KV cache; ``"weights"``: nothing (never released)."""
        if self.is_leader_rank and "kv_cache" in tags:
            await self.server.resume_kv_cache.remote()

    async def release(self):
        """Free the engine's KV cache and CUDA graphs (with ``rollout.free_cache_engine``)."""
        if self.is_leader_rank:
            await self.server.release_kv_cache.remote()

    async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                             wire_format: str = "named_tensors", **kwargs):
        """Send ``weights`` to the engine atomically, verified by checksum; every rank must call it.

        ``kwargs``: verl passes ``global_steps`` (recorded on the server, returned in ``TokenOutput``),
        ``peft_config`` (LoRA adapters are refused: merge them, ``model.lora.merge=True``) and
        ``base_sync_done``.
        """
        if wire_format != "named_tensors":
            raise NotImplementedError(f"wire_format={wire_format!r}: the vortex rollout takes 'named_tensors' "
                                      "(set rollout.checkpoint_engine.backend=naive)")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("the vortex rollout loads full weights: set model.lora.merge=True")
        tensors = trainer_tensors(weights, tied_embeddings=self.tied_embeddings)
        if not self.is_leader_rank:
            for _ in tensors:  # drain: the gathers inside the generator are collectives
                pass
            return
        await self.server.begin_weight_update.remote()
        checksum = 0.0
        for bucket in weight_buckets(tensors, self.bucket_bytes):
            payload, bucket_sum = pack_bucket(bucket, self.dtype)
            buffer = payload.pop("buffer", None)  # a CUDA bucket's memory: alive until the server copied it
            await self.server.load_weight_bucket.remote(_to_object_store(payload))
            del buffer
            checksum += bucket_sum
        self.last_update = await self.server.commit_weight_update.remote(checksum, kwargs.get("global_steps"))
        logger.info("vortex rollout %d: weights loaded, %s", self.replica_rank, self.last_update)


def _named_server(replica_rank: int):
    import ray

    from vortex_rl.integrations.verl.replica import server_name

    return ray.get_actor(server_name(replica_rank))


def _to_object_store(payload: dict[str, Any]):
    """CPU buckets go through Ray's object store explicitly (one put, read by the server zero-copy where
    it can); IPC handles are small and travel inline."""
    if "named" not in payload:
        return payload
    import ray

    return ray.put(payload) if ray.is_initialized() else payload

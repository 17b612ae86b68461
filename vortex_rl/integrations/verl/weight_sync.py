"""Weights from verl's trainer to the engine, atomic and verified (no verl, no Ray here).

The trainer side packs ``(name, tensor)`` buckets in the engine's dtype and keeps a running checksum of
what it packed; the engine side stages every bucket, and on commit checks the staged tensors against the
trainer's checksum *before* loading (a transport error leaves the old weights in place), loads them in
one atomic ``Engine.update_weights``, and then checks ``Engine.state_checksum()`` against the same value
(every engine parameter must have come from the trainer). On CPU a bucket travels as tensors (through
Ray's object store); on CUDA as one flat buffer shared by a CUDA IPC handle (the project's bucket code in
``trainers/distributed/weight_transport``), which the sender keeps alive until the engine side returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from vortex_rl.rollout import weight_checksum
from vortex_rl.rollout.weights import ROTARY_BUFFER_SUFFIXES
from vortex_rl.trainers.distributed.weight_transport import flatten_bucket, open_cuda, share_cuda, unflatten_bucket


def checksums_match(expected: float, got: float) -> bool:
    """Float64 sums of the same values in another grouping differ by rounding only."""
    return abs(expected - got) <= 1e-6 * (1.0 + abs(expected))


def trainer_tensors(weights: Iterable[tuple[str, torch.Tensor]], *, tied_embeddings: bool
                    ) -> Iterator[tuple[str, torch.Tensor]]:
    """What the engine needs of verl's per-tensor generator: no rotary buffers, no ``lm_head.weight``
    when it is tied to the embeddings (the engine holds one tensor for both)."""
    for name, tensor in weights:
        if name.endswith(ROTARY_BUFFER_SUFFIXES) or (tied_embeddings and name == "lm_head.weight"):
            continue
        yield name, tensor


def pack_bucket(bucket: list[tuple[str, torch.Tensor]], dtype: torch.dtype) -> tuple[dict[str, Any], float]:
    """One bucket as sent to the engine, and the checksum of exactly what is sent (in ``dtype``).

    CUDA tensors: ``{"specs": [(name, shape)], "cuda": handle, "buffer": flat}`` (keep ``buffer`` alive
    until the engine side has copied it; it is dropped before sending). CPU: ``{"named": [(name, t)]}``.
    """
    if bucket[0][1].is_cuda:
        flat = flatten_bucket([t for _, t in bucket], dtype)
        specs = [(name, tuple(t.shape)) for name, t in bucket]
        return {"specs": specs, "cuda": share_cuda(flat), "buffer": flat}, weight_checksum([("flat", flat)])
    named = [(name, t.detach().to(device="cpu", dtype=dtype).contiguous()) for name, t in bucket]
    return {"named": named}, weight_checksum(named)


def unpack_bucket(payload: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The engine side of ``pack_bucket``: tensors it owns (a CUDA bucket is copied out of the shared
    buffer, which the sender frees once this returns)."""
    if "cuda" in payload:
        flat = open_cuda(payload["cuda"]).clone()
        return unflatten_bucket(flat, payload["specs"])
    return [(name, t) for name, t in payload["named"]]


@dataclass
class StagedWeights:
    """The buckets of one weight update, held until ``commit``."""

    tensors: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def add(self, payload: dict[str, Any]) -> int:
        named = unpack_bucket(payload)
        self.tensors += named
        return len(named)

    def commit(self, engine, expected_checksum: float) -> dict[str, float]:
        """Verify, load atomically, verify again; returns the numbers (``ValueError`` on a mismatch)."""
        staged = weight_checksum(self.tensors)
        if not checksums_match(expected_checksum, staged):
            raise ValueError(f"weight update corrupted in transport: the trainer sent checksum "
                             f"{expected_checksum!r}, the engine received {staged!r}; the old weights stay")
        count = engine.update_weights(self.tensors)
        loaded = engine.state_checksum()
        if not checksums_match(expected_checksum, loaded):
            raise ValueError(f"after the weight update the engine's checksum is {loaded!r} but the trainer's is "
                             f"{expected_checksum!r}: the trainer did not send every engine weight "
                             f"({count} tensors loaded)")
        self.tensors = []
        return {"tensors": float(count), "checksum": loaded}

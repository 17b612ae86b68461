"""Moving the actor's weights between processes: bucket layout, flat buffers, a broadcast group, CUDA IPC.

The learner sends its full (gathered) weights in buckets of about ``rollout.update_weights_bucket_mb``,
each bucket as one flat buffer in the engine's dtype, so a transfer is one collective or one handle per
bucket rather than one per tensor. Both sides derive the bucket boundaries from the same
``WeightLayout``, so only the flat buffers travel.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from vortex_rl.rollout import weight_buckets

TensorSpec = tuple[str, tuple[int, ...]]


@dataclass(frozen=True)
class WeightLayout:
    """The actor's weights as buckets of ``(name, shape)``, every tensor sent in ``dtype``."""

    buckets: tuple[tuple[TensorSpec, ...], ...]
    dtype: torch.dtype

    @classmethod
    def plan(cls, named_shapes: Iterable[tuple[str, Sequence[int]]], *, dtype: torch.dtype,
             bucket_bytes: int) -> "WeightLayout":
        """Group tensors (in order) into buckets of about ``bucket_bytes`` in ``dtype``."""
        meta = ((name, torch.empty(tuple(shape), dtype=dtype, device="meta")) for name, shape in named_shapes)
        buckets = tuple(tuple((name, tuple(t.shape)) for name, t in bucket)
                        for bucket in weight_buckets(meta, bucket_bytes))
        if not buckets:
            raise ValueError("the weight layout is empty: the actor has no parameters")
        return cls(buckets=buckets, dtype=dtype)

    def bucket_numel(self, index: int) -> int:
        return sum(_numel(shape) for _, shape in self.buckets[index])


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def flatten_bucket(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """One contiguous 1-D buffer of ``tensors`` (cast to ``dtype``), in order."""
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def unflatten_bucket(flat: torch.Tensor, specs: Sequence[TensorSpec]) -> list[tuple[str, torch.Tensor]]:
    """Views of ``flat: [sum of numels]`` as the named tensors of ``specs`` (``flatten_bucket``'s inverse)."""
    expected = sum(_numel(shape) for _, shape in specs)
    if flat.dim() != 1 or flat.numel() != expected:
        raise ValueError(f"a bucket of {len(specs)} tensors needs a flat buffer of {expected} elements, "
                         f"got shape {tuple(flat.shape)}")
    out, offset = [], 0
    for name, shape in specs:
        n = _numel(shape)
        out.append((name, flat[offset: offset + n].view(shape)))
        offset += n
    return out


def iter_layout(layout: WeightLayout, fetch: Callable[[str], torch.Tensor]) -> Iterator[torch.Tensor]:
    """The flat buffer of every bucket of ``layout``; ``fetch(name)`` gives a full tensor (a gather on a
    sharded learner, so every learner rank must walk the layout in step)."""
    for specs in layout.buckets:
        yield flatten_bucket([fetch(name) for name, _ in specs], layout.dtype)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def host_store(host: str, *, world_size: int, timeout_s: float) -> torch.distributed.TCPStore:
    """The rendezvous store of a broadcast group, served by its source (learner rank 0) on a free port."""
    import torch.distributed as dist

    return dist.TCPStore(host, 0, world_size, True, datetime.timedelta(seconds=timeout_s), wait_for_workers=False)


class BroadcastGroup:
    """Learner rank 0 (rank 0, the source) and the rollout workers (ranks 1..): a process group of its own,
    beside the learners' default group. ``generation`` namespaces a group rebuilt after a worker restart.

    backend: ``gloo`` (CPU tensors) or ``nccl`` (CUDA tensors).
    """

    def __init__(self, host: str, port: int, *, rank: int, world_size: int, backend: str, generation: int,
                 timeout_s: float = 300.0, store: torch.distributed.TCPStore | None = None) -> None:
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(host, port, world_size, False, timeout)
        prefixed = dist.PrefixStore(f"weights/{generation}", store)
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
        elif backend == "nccl":
            self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size)
        else:
            raise ValueError(f"backend={backend!r} must be 'gloo' or 'nccl'")
        self.rank, self.world_size, self.backend = rank, world_size, backend

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Overwrite ``tensor`` on every rank with rank 0's (in place)."""
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()


def share_cuda(tensor: torch.Tensor):
    """A picklable CUDA IPC handle of ``tensor`` (the sender keeps it alive until the receiver is done)."""
    from torch.multiprocessing.reductions import reduce_tensor

    torch.cuda.synchronize(tensor.device)
    return reduce_tensor(tensor)


def open_cuda(handle) -> torch.Tensor:
    """The tensor behind a ``share_cuda`` handle, on this process's current CUDA device (both processes
    see the shared GPU, possibly under different indices)."""
    rebuild, args = handle
    args = list(args)
    args[6] = torch.cuda.current_device()  # storage_device of rebuild_cuda_tensor
    return rebuild(*args)

"""Weight buckets and flat buffers against plain tensors, and the gloo broadcast group across threads."""

from __future__ import annotations

import threading

import pytest
import torch

from vortex_rl.trainers.distributed.weight_transport import (BroadcastGroup, WeightLayout, flatten_bucket, host_store, iter_layout,
                                                 unflatten_bucket)


def named(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}


SHAPES = {"a": (4, 8), "b": (16,), "c": (3, 5, 7), "d": (1,)}  # 32, 16, 105, 1 elements


def test_layout_groups_by_bytes_in_the_send_dtype():
    # float16: 64, 32, 210, 2 bytes; 100-byte buckets: [a, b] (96), [c] (alone, larger than a bucket), [d]
    layout = WeightLayout.plan(SHAPES.items(), dtype=torch.float16, bucket_bytes=100)
    assert [[name for name, _ in bucket] for bucket in layout.buckets] == [["a", "b"], ["c"], ["d"]]
    assert [layout.bucket_numel(i) for i in range(3)] == [48, 105, 1]
    assert layout.buckets[1][0] == ("c", (3, 5, 7))


def test_flat_buffers_round_trip_exactly():
    tensors = named(SHAPES)
    layout = WeightLayout.plan(SHAPES.items(), dtype=torch.float32, bucket_bytes=200)
    got = {}
    for specs, flat in zip(layout.buckets, iter_layout(layout, tensors.__getitem__)):
        assert flat.dim() == 1 and flat.dtype == torch.float32
        got.update(unflatten_bucket(flat.clone(), specs))
    assert got.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(got[name], tensor)


def test_flatten_casts_to_the_send_dtype():
    t = torch.tensor([1.0, 1.0 + 2**-12])
    assert torch.equal(flatten_bucket([t], torch.bfloat16), t.to(torch.bfloat16))


def test_unflatten_rejects_a_buffer_of_the_wrong_size():
    with pytest.raises(ValueError, match="needs a flat buffer of 32 elements, got shape \\(31,\\)"):
        unflatten_bucket(torch.zeros(31), [("a", (4, 8))])


def test_layout_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        WeightLayout.plan([], dtype=torch.float32, bucket_bytes=10)


def test_gloo_broadcast_reaches_every_rank():
    """Rank 0 (hosting the store) and two receivers, as learner rank 0 and two rollout workers."""
    world = 3
    store = host_store("127.0.0.1", world_size=world, timeout_s=30)
    source = torch.arange(10, dtype=torch.float32)
    received: dict[int, torch.Tensor] = {}

    def rank_main(rank: int) -> None:
        group = BroadcastGroup("127.0.0.1", store.port, rank=rank, world_size=world, backend="gloo", generation=1,
                               timeout_s=30, store=store if rank == 0 else None)
        tensor = source.clone() if rank == 0 else torch.zeros(10)
        group.broadcast(tensor)
        received[rank] = tensor

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(received) == [0, 1, 2]
    for tensor in received.values():
        assert torch.equal(tensor, source)


def test_unknown_backend_is_named():
    store = host_store("127.0.0.1", world_size=1, timeout_s=5)
    with pytest.raises(ValueError, match="backend='mpi'"):
        BroadcastGroup("127.0.0.1", store.port, rank=0, world_size=1, backend="mpi", generation=1, store=store)

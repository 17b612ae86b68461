"""Weights as the trainer sends them to an engine: `weight_buckets` to ship them in groups of a bounded
size, `weight_checksum` to check that both sides hold the same values."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

# Rotary-embedding buffers some checkpoints carry: recomputed by the model, so neither loaded nor summed.
ROTARY_BUFFER_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


def weight_checksum(named_tensors: Iterable[tuple[str, torch.Tensor]], *, tied_names: Iterable[str] = (),
                    dtype: torch.dtype | None = None) -> float:
    """Sum of every element of every distinct tensor (each cast to ``dtype`` first when given), in float64.

    Matches ``Engine.state_checksum`` when given the trainer's Hugging Face parameters with the same
    values (fused parameters hold the same elements; ``tied_names`` and tensors already counted through
    another name are skipped, as are rotary buffers). Pass ``dtype`` rather than casting in the caller:
    the cast copies are freed one by one, so without it the next copy may reuse the freed memory (the
    CUDA caching allocator does at once) and look like a tensor already counted.
    """
    skip = set(tied_names)
    seen: set[tuple] = set()
    held = []  # every counted tensor stays alive until the end, so no address in ``seen`` is reused
    total = torch.zeros((), dtype=torch.float64)
    for name, tensor in named_tensors:
        if name in skip or name.endswith(ROTARY_BUFFER_SUFFIXES):
            continue
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen:
            continue
        seen.add(key)
        held.append(tensor)
        values = tensor.detach() if dtype is None else tensor.detach().to(dtype)
        total += values.double().sum().cpu()
    return float(total)


def weight_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
                   ) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of ``(name, tensor)`` of about ``bucket_bytes`` each (a larger tensor goes alone):
    how weight updates travel to an engine without materialising the whole model twice."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket

"""Token sampling with per-request random streams and log-probs of the sampling distribution.

Randomness is counter-based: the uniform number that draws token ``t`` of a sample is a hash of the
sample's seed and ``t``, computed on the device. A sample's tokens therefore do not depend on which
other requests share its batch, on preemption, or on CUDA-graph padding, and need no per-request
generator objects or host round trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.devices import to_device

MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # odd multiplier < 2**27: products of 32-bit values stay below 2**63 (no int64 overflow)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) of int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MIX) & MASK32
    x = x ^ (x >> 16)
    x = (x * _MIX) & MASK32
    return x ^ (x >> 16)


def mix32(x: int) -> int:
    """Host version of the same hash, for deriving seeds."""
    x &= MASK32
    for _ in range(2):
        x ^= x >> 16
        x = (x * _MIX) & MASK32
    return x ^ (x >> 16)


def sample_seed(seed: int, sample_index: int) -> int:
    """The 32-bit stream seed of sample ``sample_index`` of a request seeded with ``seed``."""
    return mix32(mix32(seed & MASK32) ^ mix32((seed >> 32) + 0x9E3779B9) ^ mix32(sample_index + 0x632BE5AB))


def uniform(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``[rows]`` float64 uniforms in (0, 1) from 32-bit ``seeds`` and token ``positions`` (int64)."""
    a = _mix32(seeds ^ _mix32(positions & MASK32))
    b = _mix32(a ^ 0x5BD1E995)
    return (a.double() + (b.double() + 0.5) / 2.0**32) / 2.0**32


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (``-inf``) all but the ``top_k`` largest logits of each row, then all but the smallest set of
    the remaining most likely tokens whose renormalised probability reaches ``top_p``.

    logits: ``[rows, vocab]`` float32; top_k: ``[rows]`` int64 (``vocab`` = off); top_p: ``[rows]``
    float32 (1 = off). The most likely token is always kept.
    """
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None, :]
    sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    # top_p == 1 is off: rounding in the cumulative sum must not clip the tail.
    drop = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1)
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


@dataclass
class SamplingTensors:
    """Per-row sampling parameters, ``[rows]`` each, on the logits' device."""

    temperatures: torch.Tensor  # float32, 0 = greedy
    top_k: torch.Tensor         # int64, vocab = off
    top_p: torch.Tensor         # float32
    seeds: torch.Tensor         # int64 in [0, 2**32)
    positions: torch.Tensor     # int64: index of the token being sampled in its sequence
    filters: bool               # any row with top-k / top-p (host flag: skip the sort otherwise)
    num_top_logprobs: int       # 0 = none


@dataclass
class SamplerOutput:
    tokens: torch.Tensor        # [rows] int64
    logprobs: torch.Tensor      # [rows] float32
    top_ids: torch.Tensor | None     # [rows, k] int64
    top_logprobs: torch.Tensor | None  # [rows, k] float32


def sampling_logprobs(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Log-probs ``[rows, vocab]`` of each row's sampling distribution (raw distribution for greedy rows)."""
    greedy = t.temperatures == 0
    temperature = torch.where(greedy, torch.ones_like(t.temperatures), t.temperatures)
    scaled = logits.float() / temperature[:, None]
    if t.filters:
        scaled = apply_top_k_top_p(scaled, t.top_k, t.top_p)
    return torch.log_softmax(scaled, dim=-1)


def sample(logits: torch.Tensor, t: SamplingTensors) -> SamplerOutput:
    """Draw one token per row of ``logits: [rows, vocab]`` (greedy rows take the argmax).

    Non-greedy rows invert the cumulative distribution at the row's uniform number, so the draw is
    exact for the filtered, renormalised distribution.
    """
    logprobs = sampling_logprobs(logits, t)
    cdf = logprobs.double().exp().cumsum(dim=-1)
    target = uniform(t.seeds, t.positions) * cdf[:, -1]
    drawn = torch.searchsorted(cdf, target[:, None], right=True)[:, 0].clamp(max=logits.shape[-1] - 1)
    tokens = torch.where(t.temperatures == 0, logits.argmax(dim=-1), drawn)
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0]
    top_ids = top_values = None
    if t.num_top_logprobs:
        top_values, top_ids = logprobs.topk(t.num_top_logprobs, dim=-1)
    return SamplerOutput(tokens, chosen, top_ids, top_values)


def sampling_tensors(seqs: list, vocab: int, device: torch.device) -> SamplingTensors:
    """Per-row parameters of the sequences sampling this step (``Sequence`` objects, row order), sent to
    the device in two copies (integers, floats) that do not make the host wait."""
    params = [s.params for s in seqs]
    ints = to_device(torch.tensor([[p.top_k if p.top_k > 0 and not p.greedy else vocab, s.seed, len(s)]
                                   for s, p in zip(seqs, params)], dtype=torch.long), device)
    floats = to_device(torch.tensor([[p.temperature, 1.0 if p.greedy else p.top_p] for p in params],
                                    dtype=torch.float32), device)
    return SamplingTensors(
        temperatures=floats[:, 0], top_k=ints[:, 0], top_p=floats[:, 1], seeds=ints[:, 1], positions=ints[:, 2],
        filters=any(p.filters for p in params),
        num_top_logprobs=max((p.logprobs or 0) for p in params),
    )

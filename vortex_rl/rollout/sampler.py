"""Token sampling with per-request random streams and log-probs of the sampling distribution.

Randomness is counter-based: the uniform number that draws token ``t`` of a sample is a hash of the
sample's seed and ``t``. A sample's tokens therefore do not depend on which other requests share its
batch, on preemption, or on CUDA-graph padding, and need no per-request generator objects. Seeds and
positions are known on the host, so the hash runs there, vectorised in numpy, and its uniforms travel
with the other per-row parameters: on the device it would be some thirty tiny kernels per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vortex_rl.devices import to_device

MASK32 = 0xFFFFFFFF
_MIX = np.uint32(0x45D9F3B)


def _mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash (xorshift-multiply rounds) of a uint32 array, in place: uint32 arithmetic
    wraps modulo 2**32, which is the hash's own modulus."""
    x ^= x >> 16
    x *= _MIX
    x ^= x >> 16
    x *= _MIX
    x ^= x >> 16
    return x


def mix32(x: int) -> int:
    """The same hash of one Python int (its low 32 bits), for deriving seeds."""
    return int(_mix32(np.array([x & MASK32], dtype=np.uint32))[0])


def sample_seed(seed: int, sample_index: int) -> int:
    """The 32-bit stream seed of sample ``sample_index`` of a request seeded with ``seed``."""
    return mix32(mix32(seed & MASK32) ^ mix32((seed >> 32) + 0x9E3779B9) ^ mix32(sample_index + 0x632BE5AB))


def uniform(seeds, positions) -> np.ndarray:
    """``[rows]`` float64 uniforms in (0, 1) from 32-bit ``seeds`` and token ``positions`` (integer arrays
    or lists; positions count modulo 2**32)."""
    seeds = np.asarray(seeds).astype(np.uint32)
    a = _mix32(seeds ^ _mix32(np.asarray(positions).astype(np.uint32)))
    b = _mix32(a ^ np.uint32(0x5BD1E995))
    return (a.astype(np.float64) + (b.astype(np.float64) + 0.5) / 2.0**32) / 2.0**32


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
    uniforms: torch.Tensor      # float64 in (0, 1): ``uniform(seed, position of the token drawn)``
    filters: bool               # any row with top-k / top-p (host flag: skip the sort otherwise)
    num_top_logprobs: int       # 0 = none
    any_greedy: bool = True     # host flags: which of the greedy and drawing paths the batch needs,
    all_greedy: bool = False    # so a batch of one kind launches only its own kernels


@dataclass
class SamplerOutput:
    tokens: torch.Tensor        # [rows] int64
    logprobs: torch.Tensor      # [rows] float32
    top_ids: torch.Tensor | None     # [rows, k] int64
    top_logprobs: torch.Tensor | None  # [rows, k] float32


def sampling_logprobs(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Log-probs ``[rows, vocab]`` of each row's sampling distribution (raw distribution for greedy rows)."""
    temperature = t.temperatures
    if t.any_greedy:
        temperature = torch.where(temperature == 0, torch.ones_like(temperature), temperature)
    scaled = logits.float() / temperature[:, None]
    if t.filters:
        scaled = apply_top_k_top_p(scaled, t.top_k, t.top_p)
    return torch.log_softmax(scaled, dim=-1)


def sample(logits: torch.Tensor, t: SamplingTensors) -> SamplerOutput:
    """Draw one token per row of ``logits: [rows, vocab]`` (greedy rows take the argmax).

    Non-greedy rows invert the cumulative distribution at the row's uniform number (``invert_cdf``),
    so the draw is exact for the filtered, renormalised distribution.
    """
    logprobs = sampling_logprobs(logits, t)
    if t.all_greedy:
        tokens = logits.argmax(dim=-1)
    else:
        tokens = invert_cdf(logprobs, t.uniforms)
        if t.any_greedy:
            tokens = torch.where(t.temperatures == 0, logits.argmax(dim=-1), tokens)
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0]
    top_ids = top_values = None
    if t.num_top_logprobs:
        top_values, top_ids = logprobs.topk(t.num_top_logprobs, dim=-1)
    return SamplerOutput(tokens, chosen, top_ids, top_values)


CDF_CHUNK = 1024  # tokens per chunk of the two-level inversion: ~150 chunks for a 152K vocabulary


def invert_cdf(logprobs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token where each row's cumulative distribution passes ``uniforms * total``: ``logprobs``
    ``[rows, vocab]`` float32, ``uniforms`` ``[rows]`` float64 in (0, 1); returns ``[rows]`` int64, always a
    token of positive probability.

    In two levels, so no scan runs along the whole vocabulary (a 152K-long cumulative sum per row is a
    serial loop on the CPU and a handful of thread blocks on a GPU): the masses of chunks of
    ``CDF_CHUNK`` probabilities (a parallel reduction), the chunk where the target falls (a float64
    cumulative sum over the chunks), then the token within that chunk, where the target's place in the
    chunk's mass is matched against a float64 cumulative sum over the chunk alone. So a token's
    probability is exact within its chunk and the chunks' masses are float32 sums (relative error about
    1e-7, the precision of the float32 probabilities themselves).
    """
    rows, vocab = logprobs.shape
    length = min(vocab, CDF_CHUNK)
    chunks = -(-vocab // length)
    probs = torch.empty(rows, chunks * length, dtype=torch.float32, device=logprobs.device)
    torch.exp(logprobs, out=probs[:, :vocab])
    probs[:, vocab:] = 0  # the last chunk's padding: no mass
    probs = probs.view(rows, chunks, length)
    mass = probs.sum(dim=-1).double()  # [rows, chunks]
    chunk_cdf = mass.cumsum(dim=-1)
    target = (uniforms * chunk_cdf[:, -1])[:, None]
    # right=True: the first chunk whose cumulative mass exceeds the target, so one with mass; a target
    # rounded up to the total takes the last chunk with mass.
    chunk = torch.minimum(torch.searchsorted(chunk_cdf, target, right=True),
                          torch.searchsorted(chunk_cdf, chunk_cdf[:, -1:].contiguous(), right=False))  # [rows, 1]
    before = torch.where(chunk > 0, chunk_cdf.gather(-1, (chunk - 1).clamp(min=0)), 0.0)
    fraction = (target - before) / mass.gather(-1, chunk)  # where the target falls in the chunk, [0, 1)
    inner = probs.gather(1, chunk[:, :, None].expand(-1, -1, length))[:, 0].double().cumsum(dim=-1)
    total = inner[:, -1:].contiguous()
    index = torch.minimum(torch.searchsorted(inner, fraction * total, right=True),
                          torch.searchsorted(inner, total, right=False))  # rounding: the last token with mass
    return (chunk * length + index)[:, 0]


def sampling_tensors(seqs: list, vocab: int, device: torch.device) -> SamplingTensors:
    """Per-row parameters of the sequences sampling this step (``Sequence`` objects, row order; each
    draws the token at index ``len(seq)``), sent to the device in one copy that does not make the host
    wait."""
    rows = len(seqs)
    by_params = {id(s.params): s.params for s in seqs}  # samples of a batch mostly share one params object
    rows_of = {key: (p.temperature, 1.0 if p.greedy else p.top_p, p.top_k if p.top_k > 0 and not p.greedy else vocab)
               for key, p in by_params.items()}
    host = np.empty((rows, 4), dtype=np.float64)  # temperature, top_p, top_k, uniform; exact in float64
    host[:, :3] = [rows_of[id(s.params)] for s in seqs]
    host[:, 3] = uniform(np.fromiter((s.seed for s in seqs), np.uint32, rows),
                         np.fromiter((len(s) for s in seqs), np.int64, rows))
    params = by_params.values()
    on_device = to_device(torch.from_numpy(host), device)
    return SamplingTensors(
        temperatures=on_device[:, 0].float(), top_p=on_device[:, 1].float(), top_k=on_device[:, 2].long(),
        uniforms=on_device[:, 3],
        filters=any(p.filters for p in params),
        num_top_logprobs=max((p.logprobs or 0) for p in params),
        any_greedy=any(p.greedy for p in params), all_greedy=all(p.greedy for p in params),
    )

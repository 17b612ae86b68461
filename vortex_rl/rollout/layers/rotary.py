"""Rotary position embedding with the scalings the supported checkpoints use.

``rope``: the model's normalised rope parameters (``models.arch.rope_parameters``): ``rope_theta`` and
``rope_type`` in ``ROPE_TYPES`` plus that type's fields. Tables of ``cos``/``sin`` for every position are
built once in float32 (as Hugging Face computes them) and cast to the activations' dtype when applied.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _llama3(inv_freq: torch.Tensor, rope: dict) -> torch.Tensor:
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_len = rope["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by ``factor``, short ones kept, the band between interpolated.
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(theta: float, dim: int, rope: dict, max_position_embeddings: int) -> tuple[torch.Tensor, float]:
    factor = rope.get("factor") or max_position_embeddings / rope["original_max_position_embeddings"]
    old_len = rope["original_max_position_embeddings"]

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        m, m_all = rope.get("mscale"), rope.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    beta_fast, beta_slow = rope.get("beta_fast") or 32, rope.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: keep the original frequency (high-frequency dims), 0: interpolate
    return interpolation * (1 - keep) + extrapolation * keep, float(attention_factor)


def rope_inv_freq(rope: dict, head_dim: int, max_position_embeddings: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``[head_dim // 2]`` float32 and the factor applied to cos/sin.

    ``max_position_embeddings`` (the model's) only matters for YaRN without an explicit ``factor``.
    """
    kind, theta = rope.get("rope_type", "default"), float(rope["rope_theta"])
    if kind not in ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type={kind!r} is not supported; supported: {ROPE_TYPES} (dynamic NTK rescales with the "
            "current length, which a paged cache shared across steps cannot follow)"
        )
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise NotImplementedError(f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported")
    if kind == "yarn":
        return _yarn(theta, head_dim, rope, max_position_embeddings)
    inv_freq = _base_inv_freq(theta, head_dim)
    if kind == "linear":
        inv_freq = inv_freq / rope["factor"]
    elif kind == "llama3":
        inv_freq = _llama3(inv_freq, rope)
    return inv_freq, 1.0


class RotaryEmbedding(nn.Module):
    """Rotates query and key heads by their token positions (the "rotate half" convention)."""

    def __init__(self, head_dim: int, max_positions: int, rope: dict, *, max_position_embeddings: int):
        super().__init__()
        inv_freq, scale = rope_inv_freq(rope, head_dim, max_position_embeddings)
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("sin", emb.sin() * scale, persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions: [num_tokens]`` -> ``cos, sin: [num_tokens, 1, head_dim]`` in ``dtype``."""
        return self.cos[positions].to(dtype)[:, None, :], self.sin[positions].to(dtype)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: ``[num_tokens, heads, head_dim]``; cos, sin: ``[num_tokens, 1, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin

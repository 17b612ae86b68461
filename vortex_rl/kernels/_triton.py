"""Optional Triton import shared by the kernel files, so their torch references import without Triton.

Without Triton, ``triton.jit`` leaves the kernel a plain (never called) function and every launcher
raises through :func:`require_triton`.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TRITON = False

    class _Missing:
        constexpr = int  # only read in kernel annotations

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Missing()


def require_triton(op: str) -> None:
    """Raise ``ImportError`` naming the extra to install when Triton is missing."""
    if not HAS_TRITON:
        raise ImportError(f"{op} needs Triton: pip install 'vortex-rl[test]' (or pip install triton)")


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``max(n, 1)``."""
    return 1 << max(int(n) - 1, 0).bit_length()


def unit_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dim is contiguous (kernels index it with ``ptr + i``), else a copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def check_int_tensor(name: str, t: torch.Tensor, shape: tuple) -> None:
    """``t`` must be an int32/int64 tensor of ``shape`` (``None`` entries match any size)."""
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{want}], got {tuple(t.shape)}")
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    """All tensors on one device (Triton reads raw pointers; a CPU tensor on a GPU launch crashes)."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must share one device, got {devices}")


# ------------------------------------------------------------------------------------------------ launches
@dataclass(frozen=True)
class Launch:
    """One kernel launch as a launcher issued it: the kernel, its grid and its arguments by name
    (runtime values and compile-time constants, ``num_warps`` / ``num_stages`` included)."""

    kernel: object
    grid: tuple[int, ...]
    args: dict

    @property
    def name(self) -> str:
        fn = getattr(self.kernel, "fn", self.kernel)
        return getattr(fn, "__name__", repr(fn))


_recorders: list[tuple[list[Launch], bool]] = []


@contextmanager
def record_launches(*, run: bool = True) -> Iterator[list[Launch]]:
    """Collect every launch the launchers of this package issue inside the block.

    ``run=False`` records without launching, so launchers can be driven with ``meta`` tensors: that is
    how ``scripts/inspect_kernels.py`` gets the exact arguments to compile ahead of time, and how the
    tests count the launches of a decode step without a GPU.
    """
    launches: list[Launch] = []
    _recorders.append((launches, run))
    try:
        yield launches
    finally:
        _recorders.pop()


def launch(kernel, grid: tuple[int, ...], **args) -> None:
    """``kernel[grid](**args)``, seen by :func:`record_launches`."""
    run = True
    if _recorders:
        launches, run = _recorders[-1]
        launches.append(Launch(kernel, tuple(grid), dict(args)))
    if run:
        kernel[tuple(grid)](**args)

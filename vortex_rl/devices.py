"""Device and dtype names as configs spell them (``auto``, ``cpu``, ``cuda:1``; ``bfloat16``), checked
and resolved in one place for the engine, the SGLang adapter and the trainer.

It imports nothing from ``vortex_rl``, so every layer may use it.
"""

from __future__ import annotations

import torch

TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                        "bfloat16": torch.bfloat16}
DTYPE_NAMES: tuple[str, ...] = ("auto", *TORCH_DTYPES)
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def check_dtype_name(name: object, key: str) -> None:
    """Raise ``ValueError`` naming the config ``key`` unless ``name`` is one of ``DTYPE_NAMES``."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"{key}={name!r} must be one of {DTYPE_NAMES}")


def torch_dtype(name: str, device: torch.device, *, auto: str = "float32") -> torch.dtype:
    """``name`` as a torch dtype; ``auto`` means ``auto`` on CUDA and float32 elsewhere."""
    check_dtype_name(name, "dtype")
    if name == "auto":
        return TORCH_DTYPES[auto] if torch.device(device).type == "cuda" else torch.float32
    return TORCH_DTYPES[name]


def check_device_name(name: object, key: str) -> None:
    """Raise ``ValueError`` naming the config ``key`` unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    ok = isinstance(name, str) and (name in ("auto", "cpu", "cuda") or
                                    (name.startswith("cuda:") and name[len("cuda:"):].isdigit()))
    if not ok:
        raise ValueError(f"{key}={name!r} must be one of {DEVICE_NAMES}")


def resolve_device(name: str, key: str = "device") -> torch.device:
    """The device ``name`` stands for (``auto``: CUDA when available); CUDA asked for but absent raises."""
    check_device_name(name, key)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key}={name!r} but CUDA is not available here; use {key}=cpu (or auto)")
    return device


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device`` without making the host wait for the device.

    On CUDA the bytes go through pinned memory: a copy from pageable memory may synchronise with the
    stream, which would stall a host that prepares the next step while the device runs this one. The
    pinned buffer comes from PyTorch's caching host allocator, which keeps it until the copy has run.
    Elsewhere it is ``host.to(device)`` (no copy when ``device`` is the CPU).
    """
    if torch.device(device).type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)

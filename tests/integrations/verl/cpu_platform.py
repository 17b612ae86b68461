"""A CPU platform for verl 0.9.1, so its real ``main_ppo`` runs on a machine without accelerators (tests
only; nothing in the product imports this). Loaded in every verl process through
``VERL_USE_EXTERNAL_MODULES`` (with ``VERL_PLATFORM=cpu``), without patching verl's files:

- a ``PlatformBase`` for ``cpu`` in verl's ``PlatformRegistry`` (gloo, no device module calls);
- verl's FSDP engines registered for the ``cpu`` device too (verl registers them for cuda/npu only);
- ``init_process_group`` given plain ``gloo`` where verl asks for ``cpu:gloo,cpu:gloo`` (rejected by torch
  when both entries name the cpu).

The rest is in the command line (``run_grpo_cpu.py``): logical GPUs for Ray
(``+ray_kwargs.ray_init.num_gpus=1``), ``attn_implementation=sdpa``, ``actor.strategy=fsdp2``.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Optional

import torch
import torch.distributed
from verl.plugin.platform import PlatformBase, PlatformRegistry


def _noop(*args, **kwargs):
    return 0


class _CpuDeviceModule(types.ModuleType):
    """``torch.cpu`` plus zero-returning stand-ins for the CUDA memory/stream calls verl makes."""

    def __init__(self):
        super().__init__("verl_cpu_device")

    def __getattr__(self, name):
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        if name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved",
                    "empty_cache", "reset_peak_memory_stats", "manual_seed", "manual_seed_all", "ipc_collect",
                    "set_per_process_memory_fraction"):
            return _noop
        if name == "mem_get_info":
            return lambda *a, **k: (0, 0)
        if name == "get_device_name":
            return lambda *a, **k: "cpu"
        if name == "memory_stats":
            return lambda *a, **k: {}
        if name == "get_rng_state":
            return torch.get_rng_state
        if name == "set_rng_state":
            return torch.set_rng_state
        raise AttributeError(f"the CPU test platform has no device call {name!r}")


_DEVICE_MODULE = _CpuDeviceModule()


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        return True

    def current_device(self):
        return "cpu"  # verl passes it to .to() / torch.device(); an int would mean an accelerator

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"  # the logical GPUs of +ray_kwargs.ray_init.num_gpus

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _register_fsdp_for_cpu() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl  # noqa: F401  (registers the cuda/npu engines)

    for backends in EngineRegistry._engines.values():
        for backend, devices in backends.items():
            if backend in ("fsdp", "fsdp2") and "cuda" in devices:
                devices.setdefault("cpu", devices["cuda"])


_init_process_group = torch.distributed.init_process_group


def _gloo_init_process_group(*args, backend=None, **kwargs):
    if isinstance(backend, str) and {part.split(":")[-1] for part in backend.split(",")} == {"gloo"}:
        backend = "gloo"
    return _init_process_group(*args, backend=backend, **kwargs)


if torch.distributed.init_process_group is not _gloo_init_process_group:
    torch.distributed.init_process_group = _gloo_init_process_group
_register_fsdp_for_cpu()

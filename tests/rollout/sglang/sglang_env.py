"""Importing SGLang's Python modules on a CPU machine (``make test-sglang`` installs them).

SGLang's model-config modules import ``torchvision`` at module level, and installing torchvision would
replace our CPU torch. When torchvision is absent, a permissive stand-in answers those imports while
the test modules import SGLang, and is removed right after, so no other test ever sees it. It goes in
only after ``transformers`` has recorded that torchvision is unavailable, so transformers never takes
it for the real thing. Without SGLang the test modules skip.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from contextlib import contextmanager

import pytest


class _Anything:
    """Any attribute, call or base class: enough for module-level ``from torchvision... import X``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __mro_entries__(self, bases):
        return (object,)


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


@contextmanager
def _torchvision_stand_in():
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    from transformers.utils import import_utils

    assert not import_utils.is_torchvision_available()  # cached now, before the stand-in exists
    finder = _TorchvisionStandIn()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


# What the tests use of SGLang, imported together under the stand-in.
SGLANG_MODULES = (
    "sglang.srt.plugins",
    "sglang.srt.server_args",
    "sglang.srt.layers.attention.attention_registry",
    "sglang.srt.layers.attention.base_attn_backend",
    "sglang.srt.layers.attention.torch_native_backend",
    "sglang.srt.layers.radix_attention",
    "sglang.srt.mem_cache.memory_pool",
    "sglang.srt.model_executor.forward_batch_info",
    "sglang.srt.sampling.watermarking.core",
    "sglang.srt.constants",
    "sglang.srt.configs.model_config",
    "sglang.srt.runtime_context",
    "sglang.srt.speculative.spec_info",
    "sglang.srt.sampling.sampling_params",
    "sglang.srt.utils.weight_checker",
    "sglang.srt.managers.io_struct",
    "sglang.srt.managers.scheduler_components.weight_updater",
    "sglang.srt.utils.msgspec_utils",
)


_import_failure: str | None = None


def import_sglang() -> None:
    """Import SGLang's modules the tests use, or skip the calling test module with the reason."""
    global _import_failure
    if importlib.util.find_spec("sglang") is None:
        pytest.skip("SGLang is not installed (make test-sglang installs it)", allow_module_level=True)
    if _import_failure is None:
        try:
            # SGLang warns at import that its CUDA-only quantization kernels are missing: expected on CPU.
            with _torchvision_stand_in(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                for name in SGLANG_MODULES:
                    importlib.import_module(name)
        except ImportError as exc:
            # A failed import leaves SGLang half-imported: later modules skip with this first reason.
            _import_failure = f"{exc}"
    if _import_failure is not None:
        pytest.skip(f"SGLang is installed but its modules do not import here: {_import_failure} "
                    "(make test-sglang installs their dependencies)", allow_module_level=True)

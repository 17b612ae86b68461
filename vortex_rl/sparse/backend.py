"""Which kernels run: the Triton kernels of ``vortex_rl.kernels``, the CPU kernels, or the plain-torch
references, and the fused kernels flows declare for them.

``"auto"`` takes Triton for CUDA tensors when Triton imports, the CPU kernels for CPU tensors, and the
torch references otherwise;
``"triton"`` forces the kernels (on CPU they need ``TRITON_INTERPRET=1`` set before Triton is imported);
``"cpu"`` forces the CPU kernels (``vortex_rl.kernels.cpu_decode`` / ``cpu_indexer``: CPU tensors only);
``"torch"`` forces the plain-torch references the tests compare with.

A flow may declare fused kernels (:func:`declare_fused_kernels`, a registry keyed by flow name): an
``indexer`` that replaces its ``forward_indexer`` and the framework's page assembly, and an ``append``
that replaces ``write_kv`` + ``forward_cache``. A backend with ``runs_fused`` set must provide every
kernel a flow declares; one it lacks is an error naming the flow, the kernel and the backend, never a
quiet fallback. The ``torch`` backend runs flows as written (their vFlow ops are the reference a fused
kernel is tested against). The ``cpu`` backend runs the fused kernels (its indexer is a CPU kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Callable

import torch

from vortex_rl import kernels
from vortex_rl.registry import Registry

BACKENDS = ("auto", "triton", "cpu", "torch")


def check_kernel_backend(name: object, key: str = "kernel_backend") -> None:
    """Raise ``ValueError`` naming the config ``key`` unless ``name`` is one of ``BACKENDS``."""
    if name not in BACKENDS:
        raise ValueError(f"{key}={name!r} is not one of {BACKENDS}")


class KernelSet(SimpleNamespace):
    """One backend's kernels as attributes (``sparse_decode``, ``dense_decode``, ``write_kv``,
    ``pool_pages``, ``merge_states``, and the fused kernels by their own names), with the signatures of
    the references. ``name`` names the backend; ``runs_fused`` says whether flows' fused kernels run here;
    ``step_scratch`` says whether its kernels take a ``scratch`` dict that lives for one decode step
    (:mod:`vortex_rl.kernels.cpu_step`; ``FlowContext.kernel_scratch``)."""

    name: str
    runs_fused: bool
    step_scratch: bool = False


class MissingKernelError(RuntimeError):
    """A flow declares a fused kernel the selected backend does not provide."""


def _torch_impls() -> KernelSet:
    return KernelSet(
        name="torch",
        runs_fused=False,
        sparse_decode=kernels.sparse_decode_attention_ref,
        dense_decode=kernels.dense_decode_attention_ref,
        write_kv=kernels.write_kv_ref,
        pool_pages=kernels.pool_pages_ref,
        merge_states=kernels.merge_states_ref,
        block_sparse_indexer=kernels.block_sparse_indexer_ref,
        append_kv_and_centroids=kernels.append_kv_and_centroids_ref,
    )


@lru_cache(maxsize=1)
def _cpu_impls() -> KernelSet:
    return KernelSet(name="cpu", runs_fused=True, step_scratch=True, **kernels.CPU_KERNELS)


TRITON_NAMES = {
    "sparse_decode": "sparse_decode_attention",
    "dense_decode": "dense_decode_attention",
    "write_kv": "write_kv",
    "pool_pages": "pool_pages",
    "merge_states": "merge_states",
    "block_sparse_indexer": "block_sparse_indexer",
    "append_kv_and_centroids": "append_kv_and_centroids",
}


@lru_cache(maxsize=1)
def _triton_impls() -> KernelSet | None:
    """The Triton launchers ``vortex_rl.kernels`` exports (same signatures as the references); a launcher
    the package does not export is absent, so asking for it fails by name."""
    if not getattr(kernels, "HAS_TRITON", False):
        return None
    found = {key: getattr(kernels, name) for key, name in TRITON_NAMES.items() if hasattr(kernels, name)}
    return KernelSet(name="triton", runs_fused=True, **found)


def resolve_backend(backend: str, device: torch.device | str) -> KernelSet:
    """The kernel set for ``backend`` on ``device``; raises when Triton is asked for and missing."""
    check_kernel_backend(backend)
    if backend == "torch":
        return _torch_impls()
    if backend == "cpu":
        return _cpu_impls()
    triton_set = _triton_impls()
    if backend == "triton":
        if triton_set is None:
            raise RuntimeError(
                "kernel_backend='triton' but the Triton kernels are unavailable: install the 'test' extra "
                "(pip install 'vortex-rl[test]') and run on CUDA or with TRITON_INTERPRET=1"
            )
        return triton_set
    if torch.device(device).type == "cuda" and triton_set is not None:
        return triton_set
    if torch.device(device).type == "cpu":
        return _cpu_impls()
    return _torch_impls()


def kernel_impls(t: torch.Tensor, backend: str = "auto") -> KernelSet:
    """The kernel set for tensors on ``t``'s device."""
    return resolve_backend(backend, t.device)


# ------------------------------------------------------------------------------------------ fused kernels
@dataclass(frozen=True)
class FusedKernel:
    """A kernel a flow runs instead of its vFlow ops: its name in a kernel set, and how to call it.

    ``call(kernel, ...)`` adapts the framework's arguments to the kernel's signature:

    - role ``indexer``: ``call(kernel, q, cache, ctx) -> pages`` with ``q [batch, q_heads, head_dim]``,
      ``cache`` the layer's ``{name: tensor}``, ``ctx`` the step's ``FlowContext``; returns physical
      page ids ``[batch, kv_heads, ctx.max_budget]`` int32, ``-1`` padding (sink and local pages in).
    - role ``append``: ``call(kernel, k, v, cache, loc, **kernel_kwargs) -> None``: writes ``k, v
      [num_tokens, kv_heads, head_dim]`` at slots ``loc`` and updates the flow's per-page state, in one
      launch; ``kernel_kwargs`` (the step's ``FlowContext.kernel_kwargs()``, or none) go to the kernel.

    An indexer passes ``ctx.kernel_kwargs()`` to its kernel too.
    """

    kernel: str
    call: Callable


ROLES = ("indexer", "append")
FUSED_KERNELS: Registry[dict[str, FusedKernel]] = Registry("flow with fused kernels")


def declare_fused_kernels(flow: str, **roles: FusedKernel) -> None:
    """Declare the fused kernels of the flow registered as ``flow``, by role (``indexer``, ``append``)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"declare_fused_kernels({flow!r}): unknown roles {unknown}; accepted: {ROLES}")
    if not all(isinstance(f, FusedKernel) for f in roles.values()):
        raise TypeError(f"declare_fused_kernels({flow!r}) takes FusedKernel values, got {roles!r}")
    FUSED_KERNELS.register(flow)(dict(roles))


def fused_kernels(flow: str, kernel_set: KernelSet) -> dict[str, Callable]:
    """``{role: bound call}`` of the fused kernels ``flow`` declares, on ``kernel_set``.

    Empty when the flow declares none or the backend runs flows as written (``runs_fused`` false).
    Raises ``MissingKernelError`` naming the flow, kernel and backend when the backend lacks one.
    """
    if flow not in FUSED_KERNELS or not getattr(kernel_set, "runs_fused", True):
        return {}
    bound = {}
    for role, fused in FUSED_KERNELS.get(flow).items():
        kernel = getattr(kernel_set, fused.kernel, None)
        if kernel is None:
            backend = getattr(kernel_set, "name", repr(kernel_set))
            raise MissingKernelError(
                f"flow {flow!r} declares the fused {role} kernel {fused.kernel!r}, which kernel backend "
                f"{backend!r} does not provide; add it to that backend or choose another kernel_backend"
            )
        bound[role] = _bind(fused.call, kernel)
    return bound


def _bind(call: Callable, kernel: Callable) -> Callable:
    return lambda *args, **kwargs: call(kernel, *args, **kwargs)

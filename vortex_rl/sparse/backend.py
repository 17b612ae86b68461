"""Which kernels run: the Triton kernels of ``vortex_rl.kernels``, the CPU kernels, or the references.

``"auto"`` takes Triton for CUDA tensors when Triton imports, the CPU kernels for CPU tensors, and the
torch references otherwise;
``"triton"`` forces the kernels (on CPU they need ``TRITON_INTERPRET=1`` set before Triton is imported);
``"cpu"`` forces the CPU kernels (``vortex_rl.kernels.cpu_decode``: CPU tensors only);
``"torch"`` forces the plain-torch references the tests compare with.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import torch

from vortex_rl import kernels

BACKENDS = ("auto", "triton", "cpu", "torch")


def check_kernel_backend(name: object, key: str = "kernel_backend") -> None:
    """Raise ``ValueError`` naming the config ``key`` unless ``name`` is one of ``BACKENDS``."""
    if name not in BACKENDS:
        raise ValueError(f"{key}={name!r} is not one of {BACKENDS}")


def _torch_impls() -> SimpleNamespace:
    return SimpleNamespace(
        name="torch",
        sparse_decode=kernels.sparse_decode_attention_ref,
        dense_decode=kernels.dense_decode_attention_ref,
        write_kv=kernels.write_kv_ref,
        pool_pages=kernels.pool_pages_ref,
        merge_states=kernels.merge_states_ref,
        block_sparse_indexer=None,
    )


@lru_cache(maxsize=1)
def _cpu_impls() -> SimpleNamespace:
    return SimpleNamespace(name="cpu", **kernels.CPU_KERNELS)


TRITON_NAMES = {
    "sparse_decode": "sparse_decode_attention",
    "dense_decode": "dense_decode_attention",
    "write_kv": "write_kv",
    "pool_pages": "pool_pages",
    "merge_states": "merge_states",
    "block_sparse_indexer": "block_sparse_indexer",
}


@lru_cache(maxsize=1)
def _triton_impls() -> SimpleNamespace | None:
    """The Triton launchers ``vortex_rl.kernels`` exports (same signatures as the references)."""
    if not getattr(kernels, "HAS_TRITON", False):
        return None
    found = {key: getattr(kernels, name, None) for key, name in TRITON_NAMES.items()}
    fallback = vars(_torch_impls())
    # A kernel not written yet falls back to its reference, so partial kernel sets stay usable.
    return SimpleNamespace(name="triton", **{k: v if v is not None else fallback[k] for k, v in found.items()})


def resolve_backend(backend: str, device: torch.device | str) -> SimpleNamespace:
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


def kernel_impls(t: torch.Tensor, backend: str = "auto") -> SimpleNamespace:
    """The kernel set for tensors on ``t``'s device."""
    return resolve_backend(backend, t.device)

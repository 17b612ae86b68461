"""Attention kernels: Triton kernels, each beside the plain-torch reference its tests compare with,
and the CPU kernels (``cpu_decode``, ``cpu_indexer``, ``cpu_append``; ``cpu_step`` keeps what they
derive once per decode step) that run where Triton does not.

This is the bottom layer of vortex-rl: it imports nothing from the rest of the package. The launchers
are exported only when Triton imports (``HAS_TRITON``); the references and CPU kernels always are.
"""

from vortex_rl.kernels._triton import HAS_TRITON
from vortex_rl.kernels.append_kv import append_kv_and_centroids_ref
from vortex_rl.kernels.cpu_append import append_kv_and_centroids_cpu, write_kv_cpu
from vortex_rl.kernels.cpu_decode import dense_decode_attention_cpu, sparse_decode_attention_cpu
from vortex_rl.kernels.cpu_indexer import block_sparse_indexer_cpu
from vortex_rl.kernels.indexer import block_sparse_indexer_ref
from vortex_rl.kernels.kv_cache import page_fill_from_loc, pool_pages_ref, update_centroids_ref, write_kv_ref
from vortex_rl.kernels.merge_states import merge_states_ref
from vortex_rl.kernels.paged_decode import (
    DecodeLaunch,
    all_page_ids,
    check_decode_inputs,
    default_decode_launch,
    dense_decode_attention_ref,
    sparse_decode_attention_ref,
)

__all__ = [
    "HAS_TRITON",
    "DecodeLaunch",
    "default_decode_launch",
    "all_page_ids",
    "append_kv_and_centroids_cpu",
    "append_kv_and_centroids_ref",
    "block_sparse_indexer_cpu",
    "block_sparse_indexer_ref",
    "check_decode_inputs",
    "CPU_KERNELS",
    "dense_decode_attention_cpu",
    "dense_decode_attention_ref",
    "merge_states_ref",
    "page_fill_from_loc",
    "pool_pages_ref",
    "sparse_decode_attention_cpu",
    "sparse_decode_attention_ref",
    "update_centroids_ref",
    "write_kv_cpu",
    "write_kv_ref",
]

# The kernel set ``kernel_backend="cpu"`` (and ``"auto"`` on CPU) runs, keyed as ``sparse.backend`` reads it.
CPU_KERNELS = {
    "sparse_decode": sparse_decode_attention_cpu,
    "dense_decode": dense_decode_attention_cpu,
    "write_kv": write_kv_cpu,
    "pool_pages": pool_pages_ref,
    "merge_states": merge_states_ref,
    "block_sparse_indexer": block_sparse_indexer_cpu,
    "append_kv_and_centroids": append_kv_and_centroids_cpu,
}

if HAS_TRITON:
    from vortex_rl.kernels.append_kv import append_kv_and_centroids
    from vortex_rl.kernels.indexer import block_sparse_indexer
    from vortex_rl.kernels.kv_cache import pool_pages, write_kv
    from vortex_rl.kernels.merge_states import merge_states
    from vortex_rl.kernels.paged_decode import dense_decode_attention, sparse_decode_attention

    __all__ += [
        "append_kv_and_centroids",
        "block_sparse_indexer",
        "dense_decode_attention",
        "merge_states",
        "pool_pages",
        "sparse_decode_attention",
        "write_kv",
    ]

"""Attention kernels: Triton kernels, each beside the plain-torch reference its tests compare with.

This is the bottom layer of vortex-rl: it imports nothing from the rest of the package.
"""

from vortex_rl.kernels.kv_cache import page_fill_from_loc, pool_pages_ref, update_centroids_ref, write_kv_ref
from vortex_rl.kernels.merge_states import merge_states_ref
from vortex_rl.kernels.paged_decode import (
    all_page_ids,
    check_decode_inputs,
    dense_decode_attention_ref,
    sparse_decode_attention_ref,
)

try:  # Triton is optional: the references above cover every op.
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TRITON = False

__all__ = [
    "HAS_TRITON",
    "all_page_ids",
    "check_decode_inputs",
    "dense_decode_attention_ref",
    "merge_states_ref",
    "page_fill_from_loc",
    "pool_pages_ref",
    "sparse_decode_attention_ref",
    "update_centroids_ref",
    "write_kv_ref",
]

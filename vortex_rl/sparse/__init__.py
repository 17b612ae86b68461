"""The sparse-attention programming model: write a flow with ``vFlow``, run it with ``FlowRunner``.

>>> from vortex_rl.sparse import SparseConfig, run_flow, list_flows
>>> sorted(list_flows())[:2]
['block_sparse_attention', 'dense']
"""

from vortex_rl.kernels.merge_states import merge_states_ref as merge_states
from vortex_rl.sparse.config import SparseConfig
from vortex_rl.sparse.context import CacheContext, FlowContext
from vortex_rl.sparse.flow import FLOWS, RESERVED_CACHE_NAMES, get_flow, list_flows, register, vFlow
from vortex_rl.sparse import flows as _builtin_flows  # noqa: F401  (registers the built-in flows)
from vortex_rl.sparse.ops import GeMM, GeMV, Add, Max, Maximum, Mean, Min, Multiply, Softmax, Sum, topK
from vortex_rl.sparse.runner import FlowRunner, assemble_pages, run_flow
from vortex_rl.sparse.vtensor import BATCHED, PAGED, RAGGED, StorageFormat, vTensor

__all__ = [
    "Add", "BATCHED", "CacheContext", "FLOWS", "FlowContext", "FlowRunner", "GeMM", "GeMV", "Max", "Maximum", "Mean",
    "Min", "Multiply", "PAGED", "RAGGED", "RESERVED_CACHE_NAMES", "Softmax", "SparseConfig", "StorageFormat",
    "Sum", "assemble_pages", "get_flow", "list_flows", "merge_states", "register", "run_flow", "topK",
    "vFlow", "vTensor",
]

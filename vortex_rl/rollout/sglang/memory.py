"""The flow's per-page state in SGLang's memory plan: charged to the per-token cell size, held once per KV
pool.

SGLang sizes the KV pool from the bytes one token costs (``DefaultPoolConfigurator._compute_cell_size``,
``model_executor/pool_configurator.py``) before any attention backend exists; the backend builds its
``PageState`` later. Uncharged, the state (3% of the KV pool for block-sparse centroids at page 16, 6%
for quest's min/max) comes out of the activation and CUDA-graph headroom. The plugin therefore wraps
``_compute_cell_size`` (an ``AROUND`` hook): with ``--attention-backend vortex`` each token also costs
its page's share of the state, so the pool gets correspondingly fewer tokens and the state fits where
the plan put it.

Two-batch overlap builds three backends on one pool (pdmux a group): ``shared_page_state`` hands them
one ``PageState``, so the state is allocated once and every sub-batch's writes refresh the same copy.
"""

from __future__ import annotations

import torch

from vortex_rl.rollout.sglang.compat import BACKEND_NAME
from vortex_rl.rollout.sglang.config import VortexBackendConfig
from vortex_rl.rollout.sglang.page_state import PageState
from vortex_rl.sparse import get_flow

CELL_SIZE_HOOK_TARGET = "sglang.srt.model_executor.pool_configurator.DefaultPoolConfigurator._compute_cell_size"
_POOL_ATTR = "_vortex_page_state"


def state_bytes_per_token(config: VortexBackendConfig, *, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                          layer_ids) -> int:
    """Bytes of flow state per KV token (rounded up), over the sparse layers among ``layer_ids``.

    The state of one page of one layer is ``kv_heads * rows * head_dim`` elements (``FlowRunner.
    allocate_state``); a page holds ``page_size`` tokens.
    """
    flow = get_flow(config.flow)
    if flow.is_dense:
        return 0
    rows = sum(r for r, _ in flow.cache_shapes(config.sparse.page_size, head_dim).values())
    sparse_layers = sum(1 for i in layer_ids if i not in config.sparse.dense_layers)
    page_bytes = sparse_layers * num_kv_heads * rows * head_dim * dtype_bytes
    return -(-page_bytes // config.sparse.page_size)


def cell_size_hook(original, configurator, kvc, num_layers, *args, **kwargs):
    """``AROUND`` hook of ``DefaultPoolConfigurator._compute_cell_size``: SGLang's bytes per token, plus
    the flow state's share when the server runs the ``vortex`` backend."""
    cell_size = original(configurator, kvc, num_layers, *args, **kwargs)
    server_args = kvc.server_args
    backends = {getattr(server_args, f"{kind}attention_backend", None) for kind in ("", "decode_", "prefill_")}
    if BACKEND_NAME not in backends or kvc.use_mla_backend:
        return cell_size
    from sglang.srt.runtime_context import get_parallel

    config = VortexBackendConfig.from_override_args(server_args.json_model_override_args)
    parallel = get_parallel()
    model_config = kvc.model_config
    layers = range(kvc.layer_info.start_layer, kvc.layer_info.start_layer + num_layers)
    return cell_size + state_bytes_per_token(
        config, num_kv_heads=model_config.get_num_kv_heads(parallel.attn_tp_size, parallel.attn_dcp_size),
        head_dim=model_config.head_dim, dtype_bytes=torch._utils._element_size(kvc.kv_cache_dtype),
        layer_ids=layers,
    )


def shared_page_state(runner, kv_pool, layer_ids) -> PageState:
    """The ``PageState`` of ``kv_pool``: built by the first backend on the pool, reused by the others
    (they must run the same flow on the same layers)."""
    state = getattr(kv_pool, _POOL_ATTR, None)
    if state is None:
        state = PageState(runner, kv_pool, layer_ids)
        setattr(kv_pool, _POOL_ATTR, state)
        return state
    first, this = type(state.runner.flow).__name__, type(runner.flow).__name__
    if first != this or state.runner.config != runner.config or state.layer_ids != tuple(layer_ids):
        raise ValueError(
            f"a second vortex backend on the same KV pool runs {this} ({runner.config}) on layers "
            f"{tuple(layer_ids)}, the first {first} ({state.runner.config}) on {state.layer_ids}: one pool, one flow"
        )
    return state

"""`VortexAttnBackend`: SGLang attention backend running our sparse decode flow.

It wraps one of SGLang's dense backends. Extend/prefill (and mixed, verify), the ``dense_layers`` and
layers our kernels do not cover (sliding window, cross attention) run through the dense backend;
decode of every other layer runs the flow: write K/V with SGLang's ``set_kv_buffer``, refresh the
flow's per-page state, select pages against the page table built from ``req_to_token``, and attend
with our sparse decode kernel. After every K/V write (extend or decode) the state of the touched pages
is recomputed, so pages shared through the radix cache carry their state with them.

Per-step metadata (page table, budgets) is planned in ``init_forward_metadata_in_graph`` with device
ops of fixed shape (``[batch, max_context_len / page_size]`` page tables, ``[batch, kv_heads,
max_budget]`` page lists), so SGLang's decode CUDA graphs capture and replay it.
"""

from __future__ import annotations

import logging
from functools import partial

import torch

from vortex_rl.rollout.sglang.compat import require_sglang
from vortex_rl.rollout.sglang.config import VortexBackendConfig
from vortex_rl.rollout.sglang.memory import shared_page_state
from vortex_rl.rollout.sglang.page_state import page_table_from_req_to_token
from vortex_rl.rollout.sglang.server_checks import check_page_table_width, check_server_args, page_table_pages
from vortex_rl.sparse import FlowContext, FlowRunner
from vortex_rl.sparse.backend import kernel_impls
from vortex_rl.sparse.context import budgets_for

try:
    from sglang.srt.layers.attention.base_attn_backend import AttentionBackend, SharedReadEnds
    from sglang.srt.mem_cache.memory_pool import KVWriteLoc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the vortex SGLang backend needs SGLang ({exc}); install the 'sglang' extra: pip install 'vortex-rl[sglang]'"
    ) from exc

logger = logging.getLogger(__name__)
KV_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
WIDE_PAGE_TABLE = 4096  # pages per row (64K tokens at page 16) above which startup suggests --context-length
# Capability flags SGLang reads off the backend (declared on AttentionBackend): the dense backend
# runs every extend-side path, so its answers are ours.
_DENSE_FLAGS = (
    "needs_cpu_seq_lens",
    "extend_dummy_seqs_capped_by_req_pool",
    "use_captured_forward_metadata_for_breakable_cuda_graph",
    "prefill_cuda_graph_max_batch_size",
    "prefer_eager_mixed_prefill_under_dp_attention",
    "skips_prefill_metadata_on_idle_dp_rank",
    "supports_prefill_cuda_graph_max_context_size",
    "prefill_cuda_graph_default_max_seq_len",
    "supports_full_cuda_graph_chunked_prefix",
    "dllm_attention",
    "data_type",
    "kv_cache_dtype",
)


class VortexAttnBackend(AttentionBackend):
    """Dense SGLang backend for extend, our flow for decode.

    Parameters
    ----------
    dense: the SGLang ``AttentionBackend`` serving extend and dense layers (already built).
    config: flow, ``SparseConfig`` and kernel choice.
    req_to_token_pool: SGLang's ``ReqToTokenPool``.
    token_to_kv_pool: SGLang's ``MHATokenToKVPool`` with ``page_size == config.sparse.page_size``.
    num_q_heads: query heads per tensor-parallel rank.
    """

    def __init__(self, dense: AttentionBackend, config: VortexBackendConfig, *, req_to_token_pool,
                 token_to_kv_pool, num_q_heads: int):
        super().__init__()
        self.dense = dense
        self.config = config
        self.req_to_token_pool = req_to_token_pool
        self.token_to_kv_pool = token_to_kv_pool
        self.page_size = config.sparse.page_size
        _check_pool(token_to_kv_pool, self.page_size)
        self.device = torch.device(token_to_kv_pool.device)
        self.flow_runner = FlowRunner(
            config.flow, config.sparse, num_q_heads=num_q_heads, num_kv_heads=token_to_kv_pool.head_num,
            head_dim=token_to_kv_pool.head_dim, kernel_backend=config.kernel_backend,
        )
        first = token_to_kv_pool.start_layer
        layers = range(first, first + token_to_kv_pool.layer_num)
        self.sparse_layer_ids = () if self.flow_runner.is_dense else tuple(
            i for i in layers if i not in config.sparse.dense_layers
        )
        self._sparse_layers = frozenset(self.sparse_layer_ids)
        # One state per pool: two-batch overlap's three backends (pdmux's group) share it.
        self.page_state = shared_page_state(self.flow_runner, token_to_kv_pool, self.sparse_layer_ids)
        # The budget schedule's lookup tables are built on first use; build them now, not in a capture.
        budgets_for(torch.zeros(1, dtype=torch.int32, device=self.device), config.sparse)
        for name in _DENSE_FLAGS:
            setattr(self, name, getattr(dense, name, getattr(AttentionBackend, name, None)))
        self.decode_ctx: FlowContext | None = None

    @classmethod
    def from_model_runner(cls, model_runner) -> "VortexAttnBackend":
        """Build from SGLang's ``ModelRunner``: options from ``--json-model-override-args``, checks of
        what the backend supports, and the dense backend from SGLang's registry."""
        require_sglang()
        from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
        from sglang.srt.runtime_context import get_parallel

        config = VortexBackendConfig.from_override_args(model_runner.model_config.model_override_args)
        _check_runner(model_runner, config, dcp_size=get_parallel().attn_dcp_size)
        check_server_args(partial(_server_setting, model_runner), dense_backend=config.dense_backend)
        width = model_runner.req_to_token_pool.req_to_token.shape[1]
        check_page_table_width(width, config.sparse.page_size, config.flow)
        if page_table_pages(width, config.sparse.page_size) > WIDE_PAGE_TABLE:
            logger.warning("vortex: page-table rows are %d pages wide at any sequence length (req_to_token is %d "
                           "slots); --context-length set to the longest rollout makes decode planning cheaper",
                           page_table_pages(width, config.sparse.page_size), width)
        dense = ATTENTION_BACKENDS[_dense_backend_name(config.dense_backend)](model_runner)
        num_q_heads = model_runner.model_config.num_attention_heads // get_parallel().attn_tp_size
        return cls(dense, config, req_to_token_pool=model_runner.req_to_token_pool,
                   token_to_kv_pool=model_runner.token_to_kv_pool, num_q_heads=num_q_heads)

    # ------------------------------------------------------------------------------------ metadata
    def init_forward_metadata(self, forward_batch):
        self.dense.init_forward_metadata(forward_batch)
        self._plan_decode(forward_batch)

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False):
        self.dense.init_forward_metadata_out_graph(forward_batch, in_capture=in_capture)

    def init_forward_metadata_in_graph(self, forward_batch):
        self.dense.init_forward_metadata_in_graph(forward_batch)
        self._plan_decode(forward_batch)

    def _plan_decode(self, forward_batch) -> None:
        """The decode step's page table and budgets, shared by every sparse layer."""
        self.decode_ctx = None
        if not forward_batch.forward_mode.is_decode() or not self.sparse_layer_ids:
            return
        page_table = page_table_from_req_to_token(
            self.req_to_token_pool.req_to_token, forward_batch.req_pool_indices, forward_batch.seq_lens,
            self.page_size,
        )
        self.decode_ctx = self.flow_runner.plan(page_table, forward_batch.seq_lens)

    # ------------------------------------------------------------------------------------- forward
    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache: bool = True, **kwargs):
        o = self.dense.forward_extend(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        self.page_state.update(layer.layer_id, forward_batch.out_cache_loc)
        return o

    def forward_mixed(self, q, k, v, layer, forward_batch, save_kv_cache: bool = True, **kwargs):
        o = self.dense.forward_mixed(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        self.page_state.update(layer.layer_id, forward_batch.out_cache_loc)
        return o

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache: bool = True, **kwargs):
        """Decode of one layer: ``q [batch, q_heads * head_dim]`` -> ``[batch, q_heads * head_dim]``."""
        if not self._runs_sparse(layer, kwargs):
            return self.dense.forward_decode(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        if self.decode_ctx is None:
            raise RuntimeError("VortexAttnBackend.forward_decode before init_forward_metadata of a decode batch")
        if save_kv_cache and k is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc.for_layer(forward_batch, layer), k, v, layer.k_scale, layer.v_scale
            )
        self.page_state.update(layer.layer_id, forward_batch.out_cache_loc)
        q = q.reshape(-1, layer.tp_q_head_num, layer.qk_head_dim)
        cache = self.page_state.cache(layer.layer_id)
        ctx = self.decode_ctx
        pages = self.flow_runner.select(q, cache, ctx)
        o, _ = kernel_impls(q, self.config.kernel_backend).sparse_decode(
            q, cache["k"], cache["v"], ctx.page_table, ctx.seq_lens, pages, sm_scale=layer.scaling,
            list_lens=ctx.budgets,
        )
        return o.reshape(-1, layer.tp_q_head_num * layer.v_head_dim)

    def _runs_sparse(self, layer, kwargs) -> bool:
        if layer.layer_id not in self._sparse_layers or layer.is_cross_attention:
            return False
        if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
            return False  # already local attention: the dense backend's window kernel is exact
        if layer.logit_cap and layer.logit_cap > 0 or kwargs.get("sinks") is not None:
            raise NotImplementedError(
                f"layer {layer.layer_id}: the vortex backend supports neither logit soft-capping "
                f"(logit_cap={layer.logit_cap}) nor attention sinks; list the layer in dense_layers"
            )
        if layer.qk_head_dim != layer.v_head_dim:
            raise NotImplementedError(
                f"layer {layer.layer_id}: qk_head_dim={layer.qk_head_dim} != v_head_dim={layer.v_head_dim} "
                "is not supported by the vortex backend"
            )
        return True

    # ------------------------------------------------------------------- delegated to the dense backend
    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        self.dense.init_cuda_graph_state(max_bs, max_num_tokens)

    def get_cuda_graph_seq_len_fill_value(self):
        return self.dense.get_cuda_graph_seq_len_fill_value()

    def init_forward_metadata_for_breakable_cuda_graph_capture(self, forward_batch):
        return self.dense.init_forward_metadata_for_breakable_cuda_graph_capture(forward_batch)

    def prepare_forward_metadata_for_breakable_cuda_graph_replay(self, capture_metadata, forward_batch, *,
                                                                 static_forward_batch=None):
        return self.dense.prepare_forward_metadata_for_breakable_cuda_graph_replay(
            capture_metadata, forward_batch, static_forward_batch=static_forward_batch
        )

    def prepare_full_cuda_graph_chunked_prefix(self, forward_batch, *, in_capture: bool):
        return self.dense.prepare_full_cuda_graph_chunked_prefix(forward_batch, in_capture=in_capture)

    def update_verify_buffers_to_fill_after_draft(self, spec_info, cuda_graph_bs):
        return self.dense.update_verify_buffers_to_fill_after_draft(spec_info, cuda_graph_bs)

    def on_after_cuda_graph_warmup(self):
        return self.dense.on_after_cuda_graph_warmup()

    def validate_elastic_cuda_graph_recapture(self) -> None:
        return self.dense.validate_elastic_cuda_graph_recapture()

    def get_fused_kv_write_buffers(self, layer, forward_batch):
        return self.dense.get_fused_kv_write_buffers(layer, forward_batch)

    def shared_read_ends(self, fm):
        # Decode planning reads req_to_token inside the graph: no earlier than IN_REPLAY.
        ends = [self.dense.shared_read_ends(fm)]
        if fm.is_decode():
            ends.append(SharedReadEnds.IN_REPLAY)
        return SharedReadEnds.max_of(ends)

    def _snapshot_prefill_shared_reads(self, forward_batch, *, num_qo_tokens: int):
        return self.dense._snapshot_prefill_shared_reads(forward_batch, num_qo_tokens=num_qo_tokens)

    def support_triton(self):
        return self.dense.support_triton()

    @property
    def forward_metadata(self):
        return self.dense.forward_metadata

    @forward_metadata.setter
    def forward_metadata(self, value):
        self.dense.forward_metadata = value

    @property
    def kv_index_translator(self):
        return self.dense.kv_index_translator

    @kv_index_translator.setter
    def kv_index_translator(self, value):
        self.dense.kv_index_translator = value

    def __getattr__(self, name):
        # Backend-specific hooks model code reaches through get_attn_backend() (e.g.
        # init_mha_chunk_metadata) belong to the dense backend.
        dense = self.__dict__.get("dense")
        if dense is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(dense, name)


def _check_pool(pool, page_size: int) -> None:
    if getattr(pool, "page_size", None) != page_size:
        raise ValueError(
            f"SGLang runs with --page-size {getattr(pool, 'page_size', None)} but the vortex flow's "
            f"page_size is {page_size}: start SGLang with --page-size {page_size}"
        )
    if pool.dtype not in KV_DTYPES:
        raise ValueError(f"KV cache dtype {pool.dtype} is not supported by the vortex backend; use one of {KV_DTYPES}")
    for attr in ("get_key_buffer", "head_num", "head_dim", "layer_num", "memory_saver_adapter"):
        if not hasattr(pool, attr):
            raise TypeError(
                f"the vortex backend needs an MHA KV pool (MHATokenToKVPool); {type(pool).__name__} lacks {attr!r}"
            )


def _check_runner(model_runner, config: VortexBackendConfig, *, dcp_size: int) -> None:
    problems = []
    if dcp_size > 1:
        problems.append(f"decode context parallelism (dcp size {dcp_size}) is not supported")
    if model_runner.use_mla_backend:
        problems.append("MLA models are not supported (MHA/GQA only)")
    if not model_runner.spec_algorithm.is_none():
        problems.append("speculative decoding is not supported")
    if getattr(model_runner, "is_hybrid_swa", False):
        problems.append("hybrid sliding-window KV pools are not supported")
    if model_runner.model_config.is_encoder_decoder:
        problems.append("encoder-decoder models are not supported")
    if getattr(model_runner.kv_index_translator, "is_translating", False):
        problems.append("the unified memory pool (--enable-unified-memory) is not supported")
    if model_runner.page_size != config.sparse.page_size:
        problems.append(f"--page-size {model_runner.page_size} != sparse page_size {config.sparse.page_size}: "
                        f"start SGLang with --page-size {config.sparse.page_size}")
    if problems:
        raise ValueError("--attention-backend vortex: " + "; ".join(problems))


def _server_setting(model_runner, name: str):
    """A ``ServerArgs`` field of the runner's server (``None`` if this SGLang lacks it); CUDA graphs
    read as disabled off CUDA, where SGLang captures none."""
    if "cuda_graph" in name and str(model_runner.device) != "cuda":
        return True
    return getattr(model_runner.server_args, name, None)


def _dense_backend_name(name: str) -> str:
    if name != "auto":
        return name
    major, _ = torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)
    return "fa3" if major == 9 else "triton"

"""The flow state in SGLang's memory plan: SGLang's real ``DefaultPoolConfigurator._compute_cell_size``
with and without our hook (the reference for the extra bytes: a real ``PageState`` allocated on SGLang's
``MHATokenToKVPool``), and one ``PageState`` shared by every backend built on a pool."""

from __future__ import annotations

import inspect
import types
import warnings

import pytest
import torch

from tests.rollout.sglang.sglang_env import _torchvision_stand_in, import_sglang

import_sglang()

with _torchvision_stand_in(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sglang.srt.model_executor.pool_configurator import DefaultPoolConfigurator  # noqa: E402

from sglang.srt.configs.model_config import ModelConfig  # noqa: E402
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool  # noqa: E402
from sglang.srt.plugins.hook_registry import HookRegistry  # noqa: E402
from sglang.srt.runtime_context import get_parallel  # noqa: E402
from sglang.srt.server_args import ServerArgs  # noqa: E402
from transformers import Qwen3Config  # noqa: E402

from vortex_rl.rollout.sglang import plugin  # noqa: E402
from vortex_rl.rollout.sglang.config import VortexBackendConfig  # noqa: E402
from vortex_rl.rollout.sglang.memory import shared_page_state  # noqa: E402
from vortex_rl.rollout.sglang.page_state import PageState  # noqa: E402
from vortex_rl.sparse import FlowRunner, SparseConfig  # noqa: E402

LAYERS, KV_HEADS, Q_HEADS, DIM, PS = 4, 2, 4, 16, 16
_ORIGINAL = None  # SGLang's _compute_cell_size without our hook (set by the fixture)


def _kvc(tmp_path, backend: str | None, options: VortexBackendConfig):
    Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=Q_HEADS,
                num_key_value_heads=KV_HEADS, head_dim=DIM, vocab_size=256,
                architectures=["Qwen3ForCausalLM"]).save_pretrained(tmp_path)
    server_args = ServerArgs(model_path=str(tmp_path), attention_backend=backend, page_size=PS,
                             json_model_override_args=options.merge_into_override_args())
    # The KVCacheConfigurator fields _compute_cell_size reads (real ModelConfig and ServerArgs).
    return types.SimpleNamespace(
        model_config=ModelConfig(model_path=str(tmp_path)), kv_cache_dtype=torch.bfloat16, server_args=server_args,
        use_mla_backend=False, is_draft_worker=False,
        layer_info=types.SimpleNamespace(start_layer=0, end_layer=LAYERS, num_effective_layers=LAYERS),
    )


def _cell_size(kvc, method=None) -> int:
    configurator = DefaultPoolConfigurator.__new__(DefaultPoolConfigurator)
    configurator.kv_cache_dtype_str = "auto"
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1, attn_cp_size=1, enable_dsa_cache_layer_split=False):
        return (method or DefaultPoolConfigurator._compute_cell_size)(configurator, kvc, LAYERS)


def _pool(pages: int = 8) -> MHATokenToKVPool:
    return MHATokenToKVPool(size=pages * PS, page_size=PS, dtype=torch.bfloat16, head_num=KV_HEADS, head_dim=DIM,
                            layer_num=LAYERS, device="cpu", enable_memory_saver=False)


def _runner(options: VortexBackendConfig) -> FlowRunner:
    return FlowRunner(options.flow, options.sparse, num_q_heads=Q_HEADS, num_kv_heads=KV_HEADS, head_dim=DIM,
                      kernel_backend="torch")


@pytest.fixture(scope="module", autouse=True)
def hooks_applied():
    plugin.register()
    HookRegistry.apply_hooks()  # what load_plugins() does after running the plugins
    global _ORIGINAL
    _ORIGINAL = inspect.unwrap(DefaultPoolConfigurator._compute_cell_size)  # SGLang's own, under the hook
    assert DefaultPoolConfigurator._compute_cell_size is not _ORIGINAL


@pytest.mark.parametrize("flow, dense_layers", [("block_sparse_attention", ()), ("quest", (0,))])
def test_cell_size_carries_the_flow_state(tmp_path, flow, dense_layers):
    options = VortexBackendConfig(flow=flow, sparse=SparseConfig(page_size=PS, dense_layers=dense_layers))
    kvc = _kvc(tmp_path, "vortex", options)
    kv_bytes = KV_HEADS * (DIM + DIM) * LAYERS * 2  # K and V, bf16: SGLang's formula for MHA
    assert _cell_size(kvc, _ORIGINAL) == kv_bytes
    pages = 8
    sparse_layers = [i for i in range(LAYERS) if i not in dense_layers]
    state = PageState(_runner(options), _pool(pages), sparse_layers)
    per_token = state.nbytes() / (state.num_pages * PS)  # what the backend allocates, per KV slot
    assert _cell_size(kvc) == kv_bytes + per_token
    print(f"{flow}: state is {per_token / kv_bytes:.1%} of the KV cell")


def test_cell_size_is_sglangs_for_other_backends_and_the_dense_flow(tmp_path):
    options = VortexBackendConfig(sparse=SparseConfig(page_size=PS))
    assert _cell_size(_kvc(tmp_path, "triton", options)) == _cell_size(_kvc(tmp_path, "triton", options), _ORIGINAL)
    dense = VortexBackendConfig(flow="dense", sparse=SparseConfig(page_size=PS))
    assert _cell_size(_kvc(tmp_path, "vortex", dense)) == _cell_size(_kvc(tmp_path, "vortex", dense), _ORIGINAL)


def test_backends_on_one_pool_share_one_page_state():
    """Two-batch overlap builds three backends on one pool: one state, allocated once."""
    options = VortexBackendConfig(sparse=SparseConfig(page_size=PS))
    pool = _pool()
    states = [shared_page_state(_runner(options), pool, range(LAYERS)) for _ in range(3)]
    assert all(s is states[0] for s in states)
    other_pool = _pool()
    assert shared_page_state(_runner(options), other_pool, range(LAYERS)) is not states[0]
    quest = VortexBackendConfig(flow="quest", sparse=SparseConfig(page_size=PS))
    with pytest.raises(ValueError, match="one pool, one flow"):
        shared_page_state(_runner(quest), pool, range(LAYERS))


def test_cell_size_counts_the_state_when_only_decode_runs_vortex(tmp_path):
    options = VortexBackendConfig(sparse=SparseConfig(page_size=PS))
    kvc = _kvc(tmp_path, None, options)
    kvc.server_args.decode_attention_backend = "vortex"
    assert _cell_size(kvc) > _cell_size(kvc, _ORIGINAL)

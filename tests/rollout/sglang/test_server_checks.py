"""Startup refusals, on SGLang's real ``ServerArgs`` fields, both where our engine builds the arguments
(``server_args_for``) and where SGLang's scheduler builds the backend (``from_model_runner``)."""

from __future__ import annotations

import pytest
import torch

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

from sglang.srt.layers.attention.base_attn_backend import AttentionBackend  # noqa: E402
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend  # noqa: E402
from sglang.srt.mem_cache.memory_pool import ReqToTokenPool  # noqa: E402
from sglang.srt.runtime_context import get_parallel  # noqa: E402
from sglang.srt.server_args import ServerArgs  # noqa: E402
from transformers import Qwen3Config  # noqa: E402

from tests.rollout.sglang.test_backend_cpu import _model_runner  # noqa: E402
from vortex_rl.kernels.indexer import MAX_PAGES  # noqa: E402
from vortex_rl.rollout import EngineConfig  # noqa: E402
from vortex_rl.rollout.sglang.backend import VortexAttnBackend  # noqa: E402
from vortex_rl.rollout.sglang.config import VortexBackendConfig  # noqa: E402
from vortex_rl.rollout.sglang.options import SGLangOptions, server_args_for  # noqa: E402
from vortex_rl.rollout.sglang.server_checks import REQ_TO_TOKEN_EXTRA  # noqa: E402

REFUSED = [
    ({"enable_hierarchical_cache": True}, "HiCache"),
    ({"disaggregation_mode": "decode"}, "PD disaggregation"),
    ({"enable_hisparse": True}, "hierarchical sparse attention"),
    ({"use_ray": True}, "never load plugins"),
]


@pytest.mark.parametrize("fields, reason", REFUSED)
def test_engine_refuses_modes_that_write_kv_behind_the_backend(fields, reason):
    ServerArgs(model_path="m", **fields)  # real SGLang fields: an unknown name would raise TypeError
    with pytest.raises(ValueError, match=reason):
        server_args_for("m", EngineConfig(), SGLangOptions(server_args=fields))
    ServerArgs(**server_args_for("m", EngineConfig(flow="dense"), SGLangOptions(server_args=fields)))  # ours only


@pytest.mark.parametrize("fields, reason", REFUSED)
def test_scheduler_refuses_them_too(tmp_path, fields, reason):
    """``sglang.launch_server`` users never pass through our engine: the backend factory checks again."""
    runner = _model_runner(tmp_path, VortexBackendConfig(dense_backend="torch_native"), server_args=fields)
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1), pytest.raises(ValueError, match=reason):
        VortexAttnBackend.from_model_runner(runner)


def test_torch_native_dense_backend_needs_cuda_graphs_off(tmp_path):
    # The reason, from SGLang's code: torch_native keeps the base class's init_cuda_graph_state (it raises).
    assert TorchNativeAttnBackend.init_cuda_graph_state is AttentionBackend.init_cuda_graph_state
    with pytest.raises(ValueError, match="torch_native"):
        server_args_for("m", EngineConfig(), SGLangOptions(dense_backend="torch_native"))
    args = ServerArgs(**server_args_for("m", EngineConfig(enforce_eager=True), SGLangOptions(dense_backend="torch_native")))
    assert args.disable_decode_cuda_graph
    runner = _model_runner(tmp_path, VortexBackendConfig(dense_backend="torch_native"), device="cuda")
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1), pytest.raises(ValueError, match="torch_native"):
        VortexAttnBackend.from_model_runner(runner)


def test_context_whose_page_table_exceeds_the_indexer_is_refused():
    longest = MAX_PAGES * 16 - REQ_TO_TOKEN_EXTRA
    server_args_for("m", EngineConfig(max_model_len=longest), SGLangOptions())
    with pytest.raises(ValueError, match=rf"--context-length {longest} or less"):
        server_args_for("m", EngineConfig(max_model_len=longest + 1), SGLangOptions())
    # Without --context-length SGLang serves the model's max_position_embeddings (256K here).
    hf = Qwen3Config(max_position_embeddings=262144)
    with pytest.raises(ValueError, match="262144 tokens gives 16385 pages"):
        server_args_for("m", EngineConfig(), SGLangOptions(), hf)
    server_args_for("m", EngineConfig(flow="quest"), SGLangOptions(), hf)  # quest has no fused indexer


def test_scheduler_checks_the_real_req_to_token_width(tmp_path):
    runner = _model_runner(tmp_path, VortexBackendConfig(dense_backend="torch_native"))
    runner.req_to_token_pool = ReqToTokenPool(size=1, max_context_len=MAX_PAGES * 16 + 1, device="cpu",
                                              enable_memory_saver=False)
    assert runner.req_to_token_pool.req_to_token.shape[1] == MAX_PAGES * 16 + 1 and \
        runner.req_to_token_pool.req_to_token.dtype == torch.int32
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1), pytest.raises(ValueError, match="16385 pages"):
        VortexAttnBackend.from_model_runner(runner)


def test_graph_memory_saver_needs_a_prefill_graph_that_is_not_breakable(monkeypatch):
    """sleep() frees CUDA graphs only under SGLANG_MEMORY_SAVER_CUDA_GRAPH, which SGLang's breakable
    prefill CUDA graph refuses."""
    monkeypatch.delenv("SGLANG_MEMORY_SAVER_CUDA_GRAPH", raising=False)
    server_args_for("m", EngineConfig(), SGLangOptions())
    monkeypatch.setenv("SGLANG_MEMORY_SAVER_CUDA_GRAPH", "1")
    with pytest.raises(ValueError, match="cuda_graph_backend_prefill"):
        server_args_for("m", EngineConfig(), SGLangOptions())
    fields = {"cuda_graph_backend_prefill": "disabled"}
    ServerArgs(**server_args_for("m", EngineConfig(), SGLangOptions(server_args=fields)))
    server_args_for("m", EngineConfig(), SGLangOptions(enable_memory_saver=False))

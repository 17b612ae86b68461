"""The SGLang engine adapter's translations, checked against SGLang's own ``ServerArgs`` and
``SamplingParams`` (no GPU: the engine itself runs in scripts/check_sglang.py)."""

from __future__ import annotations

import json

import pytest

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

from sglang.srt.sampling.sampling_params import TOP_K_ALL  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams as SGLangSamplingParams  # noqa: E402
from sglang.srt.server_args import ServerArgs  # noqa: E402
from transformers import Qwen3Config  # noqa: E402

from vortex_rl.rollout import EngineConfig, SamplingParams  # noqa: E402
from vortex_rl.rollout.sglang.config import VortexBackendConfig  # noqa: E402
from vortex_rl.rollout.sglang.options import (  # noqa: E402
    STATIC_SHARE,
    SGLangOptions,
    completion_from_output,
    server_args_for,
    sglang_sampling_params,
)
from vortex_rl.sparse import SparseConfig  # noqa: E402


def test_server_args_are_sglang_fields_and_carry_the_flow():
    sparse = SparseConfig(page_size=32, budget_pages=8, dense_layers=(0,))
    config = EngineConfig(flow="quest", sparse=sparse, max_num_seqs=64, max_num_batched_tokens=4096,
                          max_model_len=2048, num_pages=100, device="cuda:1", cuda_graph_batch_sizes=(1, 8, 32),
                          kernel_backend="triton", seed=7)
    options = SGLangOptions(tp_size=2, dense_backend="fa3", mem_fraction_static=0.7,
                            server_args={"disable_radix_cache": True, "json_model_override_args": '{"rope_theta": 5}'})
    args = ServerArgs(**server_args_for("org/model", config, options))  # unknown fields would raise TypeError
    assert (args.model_path, args.tp_size, args.page_size, args.base_gpu_id) == ("org/model", 2, 32, 1)
    assert (args.max_running_requests, args.chunked_prefill_size, args.context_length) == (64, 4096, 2048)
    assert (args.max_total_tokens, args.mem_fraction_static, args.random_seed) == (3200, 0.7, 7)
    assert args.cuda_graph_bs_decode == [1, 8, 32] and args.disable_radix_cache and args.enable_memory_saver
    assert args.attention_backend == "vortex" and args.dtype == "bfloat16"
    assert json.loads(args.json_model_override_args)["rope_theta"] == 5
    assert VortexBackendConfig.from_override_args(args.json_model_override_args) == VortexBackendConfig(
        flow="quest", sparse=sparse, dense_backend="fa3", kernel_backend="triton")


def test_dense_flow_uses_sglangs_own_backend():
    args = ServerArgs(**server_args_for("m", EngineConfig(flow="dense", enforce_eager=True), SGLangOptions()))
    assert args.attention_backend is None and args.json_model_override_args == "{}"
    assert args.disable_decode_cuda_graph
    args = ServerArgs(**server_args_for("m", EngineConfig(flow="dense"), SGLangOptions(dense_backend="triton")))
    assert args.attention_backend == "triton"


def test_unsupported_settings_are_refused():
    with pytest.raises(ValueError, match="device='cpu'"):
        server_args_for("m", EngineConfig(device="cpu"), SGLangOptions())
    with pytest.raises(ValueError, match="needs the model's hf_config"):
        server_args_for("m", EngineConfig(kv_cache_memory_gb=2), SGLangOptions())
    with pytest.raises(ValueError, match="deterministic inference accepts only"):
        server_args_for("m", EngineConfig(), SGLangOptions(deterministic=True))
    with pytest.raises(ValueError, match=r"sets \['page_size'\]"):
        server_args_for("m", EngineConfig(), SGLangOptions(server_args={"page_size": 1}))
    with pytest.raises(ValueError, match="dense_backend='flashmla'"):
        SGLangOptions(dense_backend="flashmla")
    with pytest.raises(ValueError, match="needs enable_memory_saver"):
        SGLangOptions(enable_memory_saver=False, sleep_releases_weights=True)


def test_memory_budget_becomes_sglangs_token_count_and_static_fraction():
    """A 1 GiB budget on each of 2 GPUs, Qwen3-like geometry: K+V of 4 layers plus one centroid row per
    page in the 3 sparse layers, computed by hand."""
    hf = Qwen3Config(num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                     hidden_size=1024)
    config = EngineConfig(sparse=SparseConfig(dense_layers=(0,)), kv_cache_memory_gb=1.0, dtype="bfloat16",
                          gpu_memory_utilization=0.5)
    args = ServerArgs(**server_args_for("m", config, SGLangOptions(tp_size=2), hf))
    row = 4 * 128 * 2  # 4 KV heads per GPU, bf16
    page_bytes = 4 * 2 * 16 * row + 3 * 1 * row
    assert args.max_total_tokens == (2**30 // page_bytes) * 16
    assert args.mem_fraction_static == pytest.approx(0.5 * STATIC_SHARE)
    with pytest.raises(ValueError, match="holds no page"):
        server_args_for("m", EngineConfig(kv_cache_memory_gb=1e-9), SGLangOptions(), hf)


@pytest.mark.parametrize("params, seed", [
    (SamplingParams(temperature=0.6, top_p=0.9, top_k=20, max_new_tokens=64, stop=(7, 9)), 123),
    (SamplingParams(temperature=1.0, top_k=0, ignore_eos=True), None),
    (SamplingParams(temperature=0.0, max_new_tokens=5), None),
])
def test_sampling_params_mean_the_same_to_sglang(params, seed):
    eos = {2, 151645}
    sp = SGLangSamplingParams(**sglang_sampling_params(params, seed, eos))
    sp.normalize(None)
    sp.verify(1000)
    assert sp.max_new_tokens == params.max_new_tokens and sp.ignore_eos == params.ignore_eos
    # SGLang stops on stop_token_ids: our stop tokens and, unless ignored, every EOS id our engine knows
    assert set(sp.stop_token_ids or ()) == set(params.stop) | (set() if params.ignore_eos else eos)
    assert sp.sampling_seed == seed
    if params.greedy:
        assert sp.top_k == 1  # SGLang's greedy
    else:
        assert (sp.temperature, sp.top_p) == (params.temperature, params.top_p)
        assert sp.top_k == (params.top_k if params.top_k > 0 else TOP_K_ALL)


def _sglang_output(ids, logprobs, reason, top=None):
    """One result of sglang.Engine.generate(return_logprob=True) (tokenizer_manager's layout)."""
    meta = {"finish_reason": reason, "output_token_logprobs": [(lp, t, None) for lp, t in zip(logprobs, ids)]}
    if top is not None:
        meta["output_top_logprobs"] = [[(lp, t, None) for t, lp in step] for step in top]
    return {"text": "ignored", "output_ids": list(ids), "meta_info": meta}


def test_completion_from_sglang_output():
    top = [[(5, -0.1), (6, -2.5), (8, -3.0)], [(2, -0.7), (5, -0.9), (1, -4.0)]]
    out = _sglang_output([5, 2], [-0.1, -0.7], {"type": "stop", "matched": 2}, top)
    c = completion_from_output(out, SamplingParams(logprobs=2), "hi")
    assert (c.token_ids, c.text, c.logprobs, c.finish_reason) == ([5, 2], "hi", [-0.1, -0.7], "stop")
    assert c.top_logprobs == [{5: -0.1, 6: -2.5}, {2: -0.7, 5: -0.9}]
    c = completion_from_output(_sglang_output([3], [-1.5], {"type": "length", "length": 1}), SamplingParams(), "")
    assert (c.finish_reason, c.top_logprobs) == ("length", None)
    with pytest.raises(RuntimeError, match="'abort'"):
        completion_from_output(_sglang_output([3], [-1.5], {"type": "abort", "message": "x"}), SamplingParams(), "")
    bad = _sglang_output([3, 4], [-1.5, -1.0], {"type": "length"})
    bad["meta_info"]["output_token_logprobs"][1] = (-1.0, 9, None)
    with pytest.raises(RuntimeError, match="other tokens"):
        completion_from_output(bad, SamplingParams(), "")

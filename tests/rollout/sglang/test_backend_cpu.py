"""The vortex backend on CPU against SGLang's real pools and its torch_native backend as the dense side.

A batch of requests is prefilled through ``VortexAttnBackend.forward`` (extend -> SGLang's
``TorchNativeAttnBackend``), then decoded a few steps (decode -> our flow). The test keeps its own copy
of every key and value and its own page lists, and checks:

- the per-page state (centroids; Quest's min/max) equals the mean/max/min of the keys of each page;
- the page table built from ``req_to_token`` is the test's own page list;
- the pages selected and the decode output equal ``run_flow`` on the same cache, and the output equals
  plain attention over the tokens of the selected pages;
- with a budget that holds every page, decode equals SGLang's own dense decode.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.rollout.sglang.sglang_env import import_sglang
from tests.paged_batch import naive_attention

import_sglang()

from sglang.srt.configs.model_config import ModelConfig  # noqa: E402
from sglang.srt.constants import GPU_MEMORY_TYPE_KV_CACHE  # noqa: E402
from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS  # noqa: E402
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend  # noqa: E402
from sglang.srt.layers.radix_attention import RadixAttention  # noqa: E402
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode  # noqa: E402
from sglang.srt.runtime_context import get_parallel  # noqa: E402
from sglang.srt.server_args import ServerArgs  # noqa: E402
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm  # noqa: E402
from transformers import Qwen3Config  # noqa: E402

from vortex_rl.rollout.sglang import plugin  # noqa: E402
from vortex_rl.rollout.sglang.backend import VortexAttnBackend  # noqa: E402
from vortex_rl.rollout.sglang.config import VortexBackendConfig  # noqa: E402
from vortex_rl.rollout.sglang.page_state import (  # noqa: E402
    KV_CACHE_TAG,
    PageState,
    page_table_from_req_to_token,
    paged_kv_view,
)
from vortex_rl.sparse import FlowRunner, SparseConfig, run_flow  # noqa: E402

PS, KV_HEADS, Q_HEADS, DIM, LAYERS, NUM_PAGES = 16, 2, 4, 16, 2, 24
PROMPTS = (15, 17, 70)  # a partial page, a page boundary just crossed, five pages (budget 4 must choose)
DECODE_STEPS = 3  # 15 -> 18 crosses into page 2; 70 -> 73 stays in page 5


class Serving:
    """SGLang's pools and the backend, with the test's own record of pages, keys and values."""

    def __init__(self, config: VortexBackendConfig, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)
        self.r2t = ReqToTokenPool(size=4, max_context_len=128, device="cpu", enable_memory_saver=False)
        self.kv = MHATokenToKVPool(size=NUM_PAGES * PS, page_size=PS, dtype=torch.float32, head_num=KV_HEADS,
                                   head_dim=DIM, layer_num=LAYERS, device="cpu", enable_memory_saver=False)
        runner = types.SimpleNamespace(device="cpu", req_to_token_pool=self.r2t, token_to_kv_pool=self.kv)
        self.dense = TorchNativeAttnBackend(runner)
        self.backend = VortexAttnBackend(self.dense, config, req_to_token_pool=self.r2t, token_to_kv_pool=self.kv,
                                         num_q_heads=Q_HEADS)
        self.layers = [RadixAttention(Q_HEADS, DIM, DIM**-0.5, KV_HEADS, layer_id=i) for i in range(LAYERS)]
        # Physical pages in shuffled order, page 0 kept free (SGLang's padding page).
        self.free_pages = (torch.randperm(NUM_PAGES, generator=self.gen) + 1).tolist()
        self.rows = [1, 2, 3]
        self.pages = [[] for _ in PROMPTS]
        self.lens = [0 for _ in PROMPTS]
        self.keys = {(i, r): torch.empty(0, KV_HEADS, DIM) for i in range(LAYERS) for r in range(len(PROMPTS))}
        self.values = dict(self.keys)

    def _slots(self, r: int, count: int) -> torch.Tensor:
        slots = []
        for t in range(self.lens[r], self.lens[r] + count):
            if t % PS == 0:
                self.pages[r].append(self.free_pages.pop())
            slots.append(self.pages[r][t // PS] * PS + t % PS)
        slots = torch.tensor(slots, dtype=torch.int64)
        self.r2t.write((self.rows[r], slice(self.lens[r], self.lens[r] + count)), slots.to(torch.int32))
        self.lens[r] += count
        return slots

    def step(self, counts, mode: ForwardMode) -> dict[int, torch.Tensor]:
        """One forward of ``counts[r]`` new tokens per request through every layer; returns outputs."""
        prefix = list(self.lens)
        loc = torch.cat([self._slots(r, n) for r, n in enumerate(counts)])
        fb = ForwardBatch(
            forward_mode=mode, batch_size=len(counts), input_ids=torch.zeros(sum(counts), dtype=torch.int64),
            req_pool_indices=torch.tensor(self.rows), seq_lens=torch.tensor(self.lens), out_cache_loc=loc,
            seq_lens_sum=sum(self.lens), extend_prefix_lens=torch.tensor(prefix),
            extend_seq_lens=torch.tensor(counts), seq_lens_cpu=torch.tensor(self.lens),
        )
        self.backend.init_forward_metadata(fb)
        outputs = {}
        for layer in self.layers:
            q = torch.randn(sum(counts), Q_HEADS * DIM, generator=self.gen)
            k = torch.randn(sum(counts), KV_HEADS, DIM, generator=self.gen)
            v = torch.randn(sum(counts), KV_HEADS, DIM, generator=self.gen)
            start = 0
            for r, n in enumerate(counts):
                key = (layer.layer_id, r)
                self.keys[key] = torch.cat([self.keys[key], k[start : start + n]])
                self.values[key] = torch.cat([self.values[key], v[start : start + n]])
                start += n
            outputs[layer.layer_id] = (q, self.backend.forward(q, k, v, layer, fb))
        return outputs

    def page_table(self) -> torch.Tensor:
        width = 128 // PS
        return torch.tensor([p + [-1] * (width - len(p)) for p in self.pages], dtype=torch.int32)

    def paged_cache(self, layer_id: int):
        return self.backend.page_state.cache(layer_id)


def _serve(config: VortexBackendConfig, seed: int = 0):
    serving = Serving(config, seed)
    serving.step(list(PROMPTS), ForwardMode.EXTEND)
    decoded = [serving.step([1] * len(PROMPTS), ForwardMode.DECODE) for _ in range(DECODE_STEPS)]
    return serving, decoded[-1]


REDUCE = {"centroids": lambda x: x.mean(0), "kmax": lambda x: x.amax(0), "kmin": lambda x: x.amin(0)}


@pytest.mark.parametrize("flow", ["block_sparse_attention", "quest"])
def test_page_state_after_prefill_and_decode_is_the_pooled_keys(flow):
    config = VortexBackendConfig(flow=flow, sparse=SparseConfig(budget_pages=4), dense_backend="torch_native")
    serving, _ = _serve(config)
    checked = 0
    for layer_id in range(LAYERS):
        state = serving.backend.page_state.state[layer_id]
        assert set(state) == ({"centroids"} if flow == "block_sparse_attention" else {"kmax", "kmin"})
        for r, pages in enumerate(serving.pages):
            keys = serving.keys[(layer_id, r)]
            for logical, physical in enumerate(pages):
                page_keys = keys[logical * PS : (logical + 1) * PS]
                for name, tensor in state.items():
                    torch.testing.assert_close(tensor[physical, :, 0], REDUCE[name](page_keys), atol=1e-5, rtol=1e-5)
                    checked += 1
    assert checked == LAYERS * sum(len(p) for p in serving.pages) * len(state)


def test_kv_cache_holds_what_was_written():
    serving, _ = _serve(VortexBackendConfig(sparse=SparseConfig(budget_pages=4), dense_backend="torch_native"))
    for layer_id in range(LAYERS):
        cache = serving.paged_cache(layer_id)
        for r, pages in enumerate(serving.pages):
            for t in range(serving.lens[r]):
                page = pages[t // PS]
                assert torch.equal(cache["k"][page, :, t % PS], serving.keys[(layer_id, r)][t])
                assert torch.equal(cache["v"][page, :, t % PS], serving.values[(layer_id, r)][t])


@pytest.mark.parametrize("flow, kernels", [
    ("block_sparse_attention", "torch"), ("quest", "torch"), ("streaming", "torch"),
    ("block_sparse_attention", "triton"),  # Triton kernels (interpreted on CPU) on SGLang's token-major cache
])
def test_decode_selects_and_attends_like_run_flow(flow, kernels):
    if kernels == "triton":
        pytest.importorskip("triton", reason="the Triton kernels need triton")
    sparse = SparseConfig(budget_pages=4)
    config = VortexBackendConfig(flow=flow, sparse=sparse, dense_backend="torch_native", kernel_backend=kernels)
    serving, outputs = _serve(config, seed=1)
    ctx = serving.backend.decode_ctx
    assert torch.equal(ctx.page_table, serving.page_table())
    assert ctx.seq_lens.tolist() == [n + DECODE_STEPS for n in PROMPTS]
    for layer_id, (q, o) in outputs.items():
        q = q.view(len(PROMPTS), Q_HEADS, DIM)
        cache = serving.paged_cache(layer_id)
        expect_o, _, expect_pages = run_flow(flow, q, cache["k"], cache["v"], serving.page_table(),
                                             ctx.seq_lens, sparse, kernel_backend="torch")
        chosen = serving.backend.flow_runner.select(q, cache, ctx)  # physical page ids
        assert _page_sets(chosen) == _page_sets(expect_pages)
        torch.testing.assert_close(o.view_as(expect_o), expect_o, atol=1e-5, rtol=1e-5)
        for r, pages in enumerate(serving.pages):  # plain attention over the chosen pages' tokens
            tokens = torch.arange(serving.lens[r])
            page_of_token = torch.tensor(pages)[tokens // PS]
            mask = torch.stack([torch.isin(page_of_token, chosen[r, h]) for h in range(KV_HEADS)], dim=1)
            ref, _ = naive_attention(q[r], serving.keys[(layer_id, r)], serving.values[(layer_id, r)], mask)
            torch.testing.assert_close(o.view(len(PROMPTS), Q_HEADS, DIM)[r].double(), ref, atol=1e-5, rtol=1e-5)
    assert min(chosen[2].ne(-1).sum(-1).tolist()) == sparse.budget_pages  # the long request was pruned


def _page_sets(pages: torch.Tensor) -> list[list[set[int]]]:
    return [[set(row.tolist()) - {-1} for row in per_request] for per_request in pages]


def test_full_budget_and_dense_layers_match_sglangs_dense_decode():
    """Budget >= every page: the flow attends to everything, so decode equals torch_native's."""
    sparse = SparseConfig(budget_pages=8, dense_layers=(1,))
    vortex, out_vortex = _serve(VortexBackendConfig(sparse=sparse, dense_backend="torch_native"), seed=2)
    assert vortex.backend.sparse_layer_ids == (0,)
    assert set(vortex.backend.page_state.state) == {0}
    # Same random stream: same tokens, same pages; every decode through SGLang's backend.
    dense, out_dense = _serve(VortexBackendConfig(flow="dense", dense_backend="torch_native"), seed=2)
    assert dense.backend.sparse_layer_ids == () and dense.backend.page_state.state == {}
    assert vortex.pages == dense.pages
    for layer_id in range(LAYERS):
        torch.testing.assert_close(out_vortex[layer_id][1], out_dense[layer_id][1], atol=1e-5, rtol=1e-5)


def test_page_table_of_graph_padding_rows_reads_the_padding_page():
    """CUDA-graph padding rows point at req_to_token row 0 with seq_len 1: page 0, nothing else."""
    r2t = ReqToTokenPool(size=2, max_context_len=64, device="cpu", enable_memory_saver=False)
    r2t.write((1, slice(0, 20)), torch.arange(5 * PS, 5 * PS + 20, dtype=torch.int32))
    table = page_table_from_req_to_token(r2t.req_to_token, torch.tensor([1, 0, 0]), torch.tensor([20, 1, 0]), PS)
    assert table.tolist() == [[5, 6, -1, -1], [0, -1, -1, -1], [-1, -1, -1, -1]]


class _RecordingSaver(TorchFunctionMode):
    """Stands in for SGLang's torch_memory_saver adapter (which needs CUDA): records which tensor
    factories run inside which tagged region."""

    def __init__(self):
        super().__init__()
        self.tag, self.calls = None, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((self.tag, getattr(func, "__name__", str(func))))
        return func(*args, **(kwargs or {}))

    @contextmanager
    def region(self, tag, enable_cpu_backup=False):
        self.tag = tag
        with self:
            yield
        self.tag = None


def test_state_is_allocated_in_the_kv_cache_memory_saver_region():
    assert KV_CACHE_TAG == GPU_MEMORY_TYPE_KV_CACHE
    kv = MHATokenToKVPool(size=4 * PS, page_size=PS, dtype=torch.float32, head_num=KV_HEADS, head_dim=DIM,
                          layer_num=2, device="cpu", enable_memory_saver=False)
    kv.memory_saver_adapter = saver = _RecordingSaver()
    runner = FlowRunner("quest", SparseConfig(budget_pages=4), num_q_heads=Q_HEADS, num_kv_heads=KV_HEADS,
                        head_dim=DIM)
    state = PageState(runner, kv, layer_ids=(0, 1))
    assert saver.calls.count((GPU_MEMORY_TYPE_KV_CACHE, "zeros")) == 4  # kmax and kmin of two layers
    assert state.num_pages == 5  # SGLang's pool has size + page_size slots: one padding page
    assert state.state[1]["kmax"].shape == (5, KV_HEADS, 1, DIM)
    assert state.nbytes() == 4 * 5 * KV_HEADS * DIM * 4


def test_mismatched_page_size_is_refused():
    kv = MHATokenToKVPool(size=4 * 8, page_size=8, dtype=torch.float32, head_num=KV_HEADS, head_dim=DIM,
                          layer_num=1, device="cpu", enable_memory_saver=False)
    r2t = ReqToTokenPool(size=1, max_context_len=32, device="cpu", enable_memory_saver=False)
    dense = TorchNativeAttnBackend(types.SimpleNamespace(device="cpu", req_to_token_pool=r2t, token_to_kv_pool=kv))
    with pytest.raises(ValueError, match="start SGLang with --page-size 16"):
        VortexAttnBackend(dense, VortexBackendConfig(), req_to_token_pool=r2t, token_to_kv_pool=kv, num_q_heads=Q_HEADS)


def _model_runner(tmp_path, options: VortexBackendConfig, *, page_size: int = PS, server_args=None, **overrides):
    """The parts of SGLang's ModelRunner the backend factory reads, each a real SGLang object: the
    ModelConfig of a tiny Qwen3 checkpoint with our options in --json-model-override-args, the
    ServerArgs (``server_args``: extra fields), and pools."""
    Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=Q_HEADS,
                num_key_value_heads=KV_HEADS, head_dim=DIM, vocab_size=256,
                architectures=["Qwen3ForCausalLM"]).save_pretrained(tmp_path)
    model_config = ModelConfig(model_path=str(tmp_path), model_override_args=options.merge_into_override_args())
    args = ServerArgs(model_path=str(tmp_path), attention_backend="vortex", page_size=page_size,
                      json_model_override_args=options.merge_into_override_args(), **(server_args or {}))
    runner = types.SimpleNamespace(
        device="cpu", server_args=args, model_config=model_config, page_size=page_size, use_mla_backend=False, is_hybrid_swa=False,
        spec_algorithm=SpeculativeAlgorithm.from_string(None), kv_index_translator=None,
        req_to_token_pool=ReqToTokenPool(size=4, max_context_len=128, device="cpu", enable_memory_saver=False),
        token_to_kv_pool=MHATokenToKVPool(size=8 * page_size, page_size=page_size, dtype=torch.float32,
                                          head_num=KV_HEADS, head_dim=DIM, layer_num=LAYERS, device="cpu",
                                          enable_memory_saver=False),
    )
    vars(runner).update(overrides)
    return runner


def test_factory_reads_the_options_sglang_carried(tmp_path):
    plugin.register()
    options = VortexBackendConfig(flow="quest", sparse=SparseConfig(budget_pages=4, dense_layers=(1,)),
                                  dense_backend="torch_native", kernel_backend="torch")
    runner = _model_runner(tmp_path, options)
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1):
        backend = ATTENTION_BACKENDS["vortex"](runner)  # what SGLang's runner calls
    assert isinstance(backend, VortexAttnBackend) and isinstance(backend.dense, TorchNativeAttnBackend)
    assert backend.config == options
    assert (backend.flow_runner.num_q_heads, backend.flow_runner.num_kv_heads, backend.flow_runner.head_dim) == (
        Q_HEADS, KV_HEADS, DIM)
    assert backend.sparse_layer_ids == (0,) and set(backend.page_state.state[0]) == {"kmax", "kmin"}


@pytest.mark.parametrize("overrides, message", [
    ({"page_size": 8}, "start SGLang with --page-size 16"),
    ({"use_mla_backend": True}, "MLA models are not supported"),
    ({"spec_algorithm": "EAGLE"}, "speculative decoding is not supported"),
])
def test_factory_refuses_what_the_backend_does_not_support(tmp_path, overrides, message):
    if "spec_algorithm" in overrides:
        overrides = {"spec_algorithm": SpeculativeAlgorithm.from_string(overrides["spec_algorithm"])}
    runner = _model_runner(tmp_path, VortexBackendConfig(dense_backend="torch_native"), **overrides)
    with get_parallel().override(attn_tp_size=1, attn_dcp_size=1), pytest.raises(ValueError, match=message):
        VortexAttnBackend.from_model_runner(runner)


@pytest.mark.parametrize("hnd", [False, True])
def test_paged_view_reads_both_sglang_kv_layouts(monkeypatch, hnd):
    """Token-major (default) and page-major (SGLANG_USE_HND_KVCACHE) pools, written by SGLang itself."""
    monkeypatch.setenv("SGLANG_USE_HND_KVCACHE", "1" if hnd else "0")
    kv = MHATokenToKVPool(size=4 * PS, page_size=PS, dtype=torch.float32, head_num=KV_HEADS, head_dim=DIM,
                          layer_num=1, device="cpu", enable_memory_saver=False)
    assert kv.get_key_buffer(0).dim() == (4 if hnd else 3)
    loc = torch.tensor([PS + 3, 3 * PS, 4 * PS + PS - 1])
    k, v = torch.randn(3, KV_HEADS, DIM), torch.randn(3, KV_HEADS, DIM)
    kv.set_kv_buffer(RadixAttention(Q_HEADS, DIM, 1.0, KV_HEADS, layer_id=0), loc, k, v)
    k_paged = paged_kv_view(kv.get_key_buffer(0), PS)
    v_paged = paged_kv_view(kv.get_value_buffer(0), PS)
    assert k_paged.shape == (5, KV_HEADS, PS, DIM)
    for i, slot in enumerate(loc.tolist()):
        assert torch.equal(k_paged[slot // PS, :, slot % PS], k[i])
        assert torch.equal(v_paged[slot // PS, :, slot % PS], v[i])

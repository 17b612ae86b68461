"""The programming model's contracts: config validation, registry, vTensor ops, errors on bad input."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.registry import RegistryError
from vortex_rl.sparse import (
    BATCHED, FLOWS, PAGED, RAGGED, FlowContext, FlowRunner, GeMV, Max, Mean, Softmax, SparseConfig, Sum, get_flow,
    list_flows, register, run_flow, topK, vFlow, vTensor,
)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(page_size=12), "page_size=12"),
        (dict(budget_pages=2), "budget 2 < sink_pages \\+ local_pages = 3"),
        (dict(local_pages=0), "local_pages=0"),
        (dict(dense_layers=(-1,)), "dense_layers"),
        (dict(budget_schedule=((2048, 16), (1024, 24))), "strictly ascending"),
        (dict(budget_schedule=((2048, 2),)), "budget_schedule step \\(2048, 2\\)"),
    ],
)
def test_sparse_config_rejects_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseConfig(**kwargs)


def test_sparse_config_schedule_lookup_and_max():
    config = SparseConfig(budget_pages=256, budget_schedule=[[2048, 29], [8192, 96]], dense_layers=[0, 1])
    assert config.dense_layers == (0, 1)
    assert [config.budget_for(n) for n in (1, 2048, 2049, 8192, 9000)] == [29, 29, 96, 96, 256]
    assert config.max_budget == 256 and config.topk_max == 253


def test_unknown_flow_lists_registered():
    with pytest.raises(RegistryError, match="block_sparse_attention") as err:
        get_flow("no_such_flow")
    assert "no_such_flow" in str(err.value)


def test_reserved_cache_names_rejected():
    class BadFlow(vFlow):
        def create_cache(self, page_size, head_dim):
            return {"k": (1, head_dim)}

    with pytest.raises(ValueError, match="'k' is reserved"):
        FlowRunner(BadFlow(), SparseConfig(), num_q_heads=2, num_kv_heads=1, head_dim=8)


def test_register_requires_vflow_and_unique_names():
    with pytest.raises(TypeError, match="vFlow subclasses"):
        register("not_a_flow")(int)
    assert "not_a_flow" not in list_flows()

    with pytest.raises(RegistryError, match="already registered"):

        @register("block_sparse_attention")
        class Impostor(vFlow):
            pass

    original = get_flow("block_sparse_attention")
    assert type(original).__name__ != "Impostor" and original.name == "block_sparse_attention"
    assert FLOWS.get("block_sparse_attention") is type(original) and FLOWS.names() == list_flows()


def test_user_flow_with_max_key_score(make_paged_batch):
    """A user flow (per-page max key, as the README shows) selects the pages a direct loop picks."""

    @register("test_max_key")
    class MaxKey(vFlow):
        def __init__(self):
            self.page_max, self.gemv, self.topk = Max(), GeMV(), topK()

        def create_cache(self, page_size, head_dim):
            return {"kmax": (1, head_dim)}

        def forward_cache(self, cache, loc, ctx):
            self.page_max(cache["k"], cache["kmax"], loc=loc, ctx=ctx)

        def forward_indexer(self, q, o, cache, ctx):
            self.topk(self.gemv(q.sum(dim=2), cache["kmax"], ctx=ctx), o, ctx=ctx)

    assert "test_max_key" in list_flows()
    batch = make_paged_batch([200], q_heads=2, kv_heads=1, seed=9)
    config = SparseConfig(budget_pages=5)
    _, _, pages = run_flow("test_max_key", batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens, config)
    keys = batch.keys[0][:, 0]
    score = {p: float(keys[p * 16 : (p + 1) * 16].max(0).values @ batch.q[0].sum(0)) for p in range(13)}
    best = sorted(range(1, 11), key=lambda p: -score[p])[:2]
    logical = {batch.page_table[0].tolist().index(p) for p in pages[0, 0].tolist() if p >= 0}
    assert logical == {0, 11, 12, *best}


def _ctx(lengths, max_pages=8, q_heads=4, kv_heads=2, d=8):
    page_table = torch.arange(len(lengths) * max_pages, dtype=torch.int32).view(len(lengths), max_pages)
    return FlowContext.plan(page_table, torch.tensor(lengths, dtype=torch.int32), SparseConfig(budget_pages=4),
                            num_q_heads=q_heads, num_kv_heads=kv_heads, head_dim=d)


def test_gemv_matches_direct_scores():
    ctx = _ctx([40, 100])
    state = torch.randn(16, 2, 1, 8)
    q = torch.randn(2, 2, 8)
    score = GeMV()(vTensor(q, BATCHED), vTensor(state, PAGED), ctx=ctx)
    assert score.storage_format == RAGGED and score.shape == (2, 2, 8)
    for b in range(2):
        for h in range(2):
            for p in range(8):
                expect = q[b, h] @ state[ctx.page_table[b, p], h, 0]
                torch.testing.assert_close(score[b, h, p].plain(), expect, atol=1e-5, rtol=1e-5)


def test_ragged_softmax_and_mean_ignore_padding_pages():
    ctx = _ctx([20, 100])  # 2 and 7 pages of 8
    x = vTensor(torch.randn(2, 2, 8), RAGGED)
    probs = Softmax()(x, ctx=ctx).plain()
    torch.testing.assert_close(probs[0, :, :2], torch.softmax(x.plain()[0, :, :2], -1))
    assert (probs[0, :, 2:] == 0).all() and (probs[1, :, 7:] == 0).all()
    mean = Mean(dim=-1)(x, ctx=ctx)
    assert mean.storage_format == BATCHED
    torch.testing.assert_close(mean.plain()[1], x.plain()[1, :, :7].mean(-1))


def test_torch_functions_keep_the_format():
    q = vTensor(torch.randn(2, 2, 3, 8), BATCHED)
    assert q.mean(dim=2).storage_format == BATCHED
    assert (q * 2).storage_format == BATCHED
    assert type(torch.cat([q.plain(), q.plain()])) is torch.Tensor


def test_ops_reject_formats_without_implementation():
    ctx = _ctx([40, 100])
    with pytest.raises(TypeError, match=r"GeMV has no implementation for inputs \(paged, paged\); accepted: \(batched, paged\)"):
        GeMV()(vTensor(torch.randn(16, 2, 1, 8), PAGED), vTensor(torch.randn(16, 2, 1, 8), PAGED), ctx=ctx)
    with pytest.raises(TypeError, match="plain tensor"):
        Sum(dim=1)(torch.randn(3, 3))
    with pytest.raises(ValueError, match="storage_format='flat'"):
        vTensor(torch.zeros(1), "flat")


def test_run_flow_rejects_mismatched_inputs(make_paged_batch):
    batch = make_paged_batch([40], q_heads=4, kv_heads=2)
    args = [batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens, SparseConfig()]
    bad_dtype = list(args)
    bad_dtype[0] = batch.q.half()
    with pytest.raises(ValueError, match="share a dtype"):
        run_flow("block_sparse_attention", *bad_dtype)
    bad_heads = list(args)
    bad_heads[0] = torch.randn(1, 3, 16)
    with pytest.raises(ValueError, match=r"q_heads \(3\) must be a multiple of kv_heads \(2\)"):
        run_flow("block_sparse_attention", *bad_heads)
    bad_lens = list(args)
    bad_lens[4] = torch.tensor([40, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"seq_lens must be \[batch=1\]"):
        run_flow("block_sparse_attention", *bad_lens)
    with pytest.raises(ValueError, match="page_size 16 != config.page_size 32"):
        run_flow("block_sparse_attention", *args[:5], SparseConfig(page_size=32))
    with pytest.raises(ValueError, match="kernel_backend='cuda'"):
        run_flow("block_sparse_attention", *args, kernel_backend="cuda")

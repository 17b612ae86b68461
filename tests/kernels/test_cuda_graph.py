"""A whole sparse decode step (append, centroids, indexer, attention) captured in a CUDA graph."""

import torch

from tests.paged_batch import assert_attention_close, needs_cuda
from vortex_rl.kernels import (
    block_sparse_indexer_ref,
    dense_decode_attention_ref,
    pool_pages_ref,
    sparse_decode_attention_ref,
    write_kv_ref,
)

B, Q_HEADS, KV_HEADS, HEAD_DIM, PAGE, MAX_PAGES = 4, 8, 2, 128, 16, 48
SELECT = dict(sink_pages=1, local_pages=2, max_budget=8)


def _static_inputs(dtype):
    gen = torch.Generator().manual_seed(0)
    num_pages = B * MAX_PAGES
    randn = lambda *shape: torch.randn(*shape, generator=gen).to("cuda", dtype)
    s = {
        "k_cache": randn(num_pages, KV_HEADS, PAGE, HEAD_DIM),
        "v_cache": randn(num_pages, KV_HEADS, PAGE, HEAD_DIM),
        "centroids": randn(num_pages, KV_HEADS, 1, HEAD_DIM),
        "page_table": torch.randperm(num_pages, generator=gen).view(B, MAX_PAGES).to("cuda", torch.int32),
        "seq_lens": torch.tensor([100, 37, 511, 16], dtype=torch.int32, device="cuda"),
        "budgets": torch.tensor([8, 8, 6, 8], dtype=torch.int32, device="cuda"),
        "loc": torch.zeros(B, dtype=torch.int64, device="cuda"),
        "q": randn(B, Q_HEADS, HEAD_DIM), "k": randn(B, KV_HEADS, HEAD_DIM), "v": randn(B, KV_HEADS, HEAD_DIM),
        "ids": torch.empty(B, KV_HEADS, SELECT["max_budget"], dtype=torch.int32, device="cuda"),
        "o": randn(B, Q_HEADS, HEAD_DIM), "lse": torch.empty(B, Q_HEADS, device="cuda"),
        "o_dense": randn(B, Q_HEADS, HEAD_DIM), "lse_dense": torch.empty(B, Q_HEADS, device="cuda"),
    }
    return s


def _step(s):
    from vortex_rl.kernels import (
        block_sparse_indexer,
        dense_decode_attention,
        pool_pages,
        sparse_decode_attention,
        write_kv,
    )

    write_kv(s["k"], s["v"], s["k_cache"], s["v_cache"], s["loc"])
    pool_pages(s["k_cache"], s["centroids"], s["loc"], pool="mean")
    block_sparse_indexer(s["q"], s["centroids"], s["page_table"], s["seq_lens"], s["budgets"], out=s["ids"],
                         **SELECT)
    cache = (s["k_cache"], s["v_cache"], s["page_table"], s["seq_lens"])
    sparse_decode_attention(s["q"], *cache, s["ids"], out=s["o"], lse=s["lse"])
    dense_decode_attention(s["q"], *cache, out=s["o_dense"], lse=s["lse_dense"])


def _advance(s, gen):
    """Next decode step's inputs, written into the static buffers: one more token per request."""
    s["seq_lens"] += 1
    pos = (s["seq_lens"] - 1).long()
    s["loc"].copy_(s["page_table"].long().gather(1, (pos // PAGE)[:, None])[:, 0] * PAGE + pos % PAGE)
    for name in ("q", "k", "v"):
        s[name].copy_(torch.randn(s[name].shape, generator=gen).to(s[name]))


def _reference_write(s):
    k_cache, v_cache, centroids = s["k_cache"].clone(), s["v_cache"].clone(), s["centroids"].clone()
    write_kv_ref(s["k"], s["v"], k_cache, v_cache, s["loc"])
    pool_pages_ref(k_cache, centroids, s["loc"])
    return k_cache, v_cache, centroids


@needs_cuda
def test_decode_step_replays_in_cuda_graph():
    dtype = torch.bfloat16
    s = _static_inputs(dtype)
    gen = torch.Generator().manual_seed(1)
    _advance(s, gen)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile the kernels outside the capture
        _step(s)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _step(s)
    for _ in range(3):
        _advance(s, gen)
        k_cache, v_cache, centroids = _reference_write(s)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(s["k_cache"], k_cache) and torch.equal(s["v_cache"], v_cache)
        torch.testing.assert_close(s["centroids"].float(), centroids.float(), atol=1.6e-2, rtol=1.6e-2)
        # Each later stage is checked on the graph's own inputs to it (bf16 centroids may differ by an ulp).
        ids = block_sparse_indexer_ref(s["q"], s["centroids"], s["page_table"], s["seq_lens"], s["budgets"],
                                       **SELECT)
        assert torch.equal(s["ids"], ids)
        cache = (s["q"], s["k_cache"], s["v_cache"], s["page_table"], s["seq_lens"])
        assert_attention_close((s["o"], s["lse"]), sparse_decode_attention_ref(*cache, ids), dtype)
        assert_attention_close((s["o_dense"], s["lse_dense"]), dense_decode_attention_ref(*cache), dtype)

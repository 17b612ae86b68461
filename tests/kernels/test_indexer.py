"""Fused block-sparse indexer against its torch reference and the flow runner's page selection."""

import pytest
import torch

from tests.paged_batch import DEVICE, DTYPES
from vortex_rl.kernels.indexer import block_sparse_indexer, block_sparse_indexer_ref
from vortex_rl.sparse import FlowRunner, SparseConfig

SEQ_LENS = [1, 15, 17, 100, 333, 700]  # 1 to 44 pages: some fit the budget, some overflow it


def _centroids(num_pages, kv_heads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_pages, kv_heads, 1, head_dim, generator=gen).to(DEVICE, dtype)


def _page_sets(ids):
    return [[set(row[row >= 0].tolist()) for row in per_head] for per_head in ids.cpu()]


def _logical_sets(ids, page_table):
    """Page sets as logical ids (positions in each request's page table)."""
    where = {(b, int(p)): i for b, row in enumerate(page_table.cpu()) for i, p in enumerate(row.tolist()) if p >= 0}
    return [[{where[b, p] for p in pages} for pages in per_head] for b, per_head in enumerate(_page_sets(ids))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group,head_dim", [(1, 64), (2, 128), (4, 64)])
def test_matches_reference(make_paged_batch, dtype, group, head_dim):
    b = make_paged_batch(SEQ_LENS, q_heads=2 * group, kv_heads=2, head_dim=head_dim, dtype=dtype, device=DEVICE)
    cent = _centroids(b.k_cache.shape[0], 2, head_dim, dtype)
    budgets = torch.tensor([8, 8, 8, 8, 12, 10], dtype=torch.int32, device=DEVICE)
    kw = dict(sink_pages=1, local_pages=2, max_budget=12)
    got = block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    want = block_sparse_indexer_ref(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    assert got.dtype == torch.int32 and got.shape == (6, 2, 12)
    assert torch.equal(got, want)
    # Independent of the reference: overflowing requests attend exactly their budget, with the
    # sink and local pages; the others all their pages.
    for i, n in enumerate(b.num_pages):
        for pages in _logical_sets(got, b.page_table)[i]:
            if n <= budgets[i]:
                assert pages == set(range(n))
            else:
                assert len(pages) == budgets[i] and {0, n - 2, n - 1} <= pages


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_page_sets_match_flow_runner_select(make_paged_batch, backend):
    """``FlowRunner(...).select`` of the reference flow picks the same page sets as the kernel."""
    config = SparseConfig(page_size=16, budget_pages=10, sink_pages=2, local_pages=1,
                          budget_schedule=((200, 6), (400, 8)))
    b = make_paged_batch(SEQ_LENS, q_heads=8, kv_heads=2, head_dim=64, seed=4, device=DEVICE)
    make = lambda kernels: FlowRunner("block_sparse_attention", config, num_q_heads=8, num_kv_heads=2,
                                      head_dim=64, kernel_backend=kernels)
    runner = make(backend)
    cache = {"k": b.k_cache, "v": b.v_cache, **runner.allocate_state(b.k_cache.shape[0], dtype=b.k_cache.dtype,
                                                                     device=DEVICE)}
    cache["centroids"].copy_(_centroids(b.k_cache.shape[0], 2, 64, torch.float32, seed=5))
    ctx = runner.plan(b.page_table, b.seq_lens)
    want = make("torch").select(b.q, cache, ctx)  # the flow written with format-aware ops
    got = block_sparse_indexer(b.q, cache["centroids"], ctx.page_table, ctx.seq_lens, ctx.budgets,
                               sink_pages=2, local_pages=1, max_budget=10)
    assert _page_sets(got) == _page_sets(want)
    assert _page_sets(runner.select(b.q, cache, ctx)) == _page_sets(want)


def test_32k_token_context_and_page_size_argument(make_paged_batch):
    """2048 pages in one request: the whole row is ranked in one program."""
    b = make_paged_batch([32768 - 5, 40], q_heads=2, kv_heads=1, head_dim=16, spare_pages=0, seed=6, device=DEVICE)
    cent = _centroids(b.k_cache.shape[0], 1, 16, torch.float32, seed=7)
    budgets = torch.tensor([32, 32], dtype=torch.int32, device=DEVICE)
    kw = dict(sink_pages=1, local_pages=2, max_budget=32)
    want = block_sparse_indexer_ref(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    out = torch.empty_like(want)
    got = block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, page_size=16, out=out, **kw)
    assert got is out and torch.equal(got, want)
    scores = cent[b.page_table[0, :2048].long(), 0, 0] @ b.q[0].float().mean(0)
    top = set((scores[1:2046].topk(29).indices + 1).tolist())
    assert _logical_sets(got, b.page_table)[0][0] == {0, 2046, 2047} | top


@pytest.mark.parametrize("num_chunks", [2, 3, 16])
def test_scores_split_over_chunks_match_reference(make_paged_batch, num_chunks):
    """The two-launch path (scores over chunks of pages, then selection): rows of 1 to 5 blocks of
    128 pages, so chunks hold whole blocks, some hold none, and a request's last chunk is partial."""
    b = make_paged_batch([1, 17, 2100, 5000, 9000], q_heads=4, kv_heads=2, head_dim=64, seed=8, device=DEVICE)
    cent = _centroids(b.k_cache.shape[0], 2, 64, torch.float32, seed=9)
    budgets = torch.tensor([32, 32, 32, 20, 32], dtype=torch.int32, device=DEVICE)
    kw = dict(sink_pages=1, local_pages=2, max_budget=32)
    want = block_sparse_indexer_ref(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    scores = torch.full((10, 1024), float("nan"), device=DEVICE)
    got = block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, page_size=16, num_chunks=num_chunks,
                               scores=scores, **kw)
    assert torch.equal(got, want)
    # Every page of an overflowing request was scored (by whichever chunk holds it), to fp32 rounding.
    q_mean = b.q.float().view(5, 2, 2, 64).mean(2)
    for i, n in enumerate(b.num_pages):
        for h in range(2):
            if n > budgets[i]:
                ref = cent[b.page_table[i, :n].long(), h, 0].float() @ q_mean[i, h]
                torch.testing.assert_close(scores[i * 2 + h, :n], ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="num_chunks=0 must be a positive int"):
        block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, num_chunks=0, **kw)


def test_bad_inputs_raise_clear_errors(make_paged_batch):
    b = make_paged_batch([40], q_heads=4, kv_heads=2, head_dim=64, device=DEVICE)
    cent = _centroids(b.k_cache.shape[0], 2, 64, torch.float32)
    budgets = torch.tensor([8], dtype=torch.int32, device=DEVICE)
    kw = dict(sink_pages=1, local_pages=2, max_budget=8)
    with pytest.raises(ValueError, match="centroids must be"):
        block_sparse_indexer(b.q, cent[:, :, :, :32], b.page_table, b.seq_lens, budgets, **kw)
    with pytest.raises(ValueError, match="budgets must have shape"):
        block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets[:0], **kw)
    with pytest.raises(ValueError, match="max_budget >= sink_pages"):
        block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, sink_pages=4, local_pages=5, max_budget=8)
    with pytest.raises(ValueError, match="out must be int32"):
        block_sparse_indexer(b.q, cent, b.page_table, b.seq_lens, budgets, out=torch.empty(1, 2, 8), **kw)

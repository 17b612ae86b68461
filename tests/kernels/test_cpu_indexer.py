"""CPU block-sparse indexer against its torch reference and the flow runner's page selection.

Exact: the scores are fp32 on both sides and the random centroids have no near ties, so the chosen ids
(ascending, ``-1`` after) are equal.
"""

import pytest
import torch

from vortex_rl.kernels.cpu_indexer import block_sparse_indexer_cpu
from vortex_rl.kernels.indexer import block_sparse_indexer_ref
from vortex_rl.sparse import FlowRunner, SparseConfig

SEQ_LENS = [1, 15, 17, 100, 333, 700]  # 1 to 44 pages: some fit the budget, some overflow it


def _centroids(num_pages, kv_heads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_pages, kv_heads, 1, head_dim, generator=gen).to(dtype)


def _page_sets(ids):
    return [[set(row[row >= 0].tolist()) for row in per_head] for per_head in ids]


@pytest.mark.parametrize("page_size", [16, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group,head_dim", [(1, 64), (2, 128), (4, 64)])
def test_matches_reference(make_paged_batch, dtype, group, head_dim, page_size):
    b = make_paged_batch(SEQ_LENS, q_heads=2 * group, kv_heads=2, head_dim=head_dim, dtype=dtype)
    cent = _centroids(b.k_cache.shape[0], 2, head_dim, dtype)
    budgets = torch.tensor([8, 8, 8, 8, 12, 10], dtype=torch.int32)
    kw = dict(sink_pages=1, local_pages=2, max_budget=12, page_size=page_size)
    got = block_sparse_indexer_cpu(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    assert got.dtype == torch.int32 and got.shape == (6, 2, 12)
    assert torch.equal(got, block_sparse_indexer_ref(b.q, cent, b.page_table, b.seq_lens, budgets, **kw))


def test_every_request_fits_skips_scoring_and_takes_all_pages(make_paged_batch):
    b = make_paged_batch([1, 15, 17, 40], q_heads=4, kv_heads=2, head_dim=16)
    cent = torch.full((b.k_cache.shape[0], 2, 1, 16), float("nan"))  # never read
    budgets = torch.full((4,), 4, dtype=torch.int32)
    out = torch.empty(4, 2, 5, dtype=torch.int32)
    got = block_sparse_indexer_cpu(b.q, cent, b.page_table, b.seq_lens, budgets, sink_pages=1, local_pages=1,
                                   max_budget=5, page_size=16, out=out)
    assert got is out
    table = b.page_table.tolist()  # all pages, as physical ids in logical order
    assert got[3, 0].tolist() == table[3][:3] + [-1, -1] and got[0, 1].tolist() == table[0][:1] + [-1] * 4


def test_32k_token_context(make_paged_batch):
    b = make_paged_batch([32768 - 5, 40], q_heads=2, kv_heads=1, head_dim=16, spare_pages=0, seed=6)
    cent = _centroids(b.k_cache.shape[0], 1, 16, torch.float32, seed=7)
    budgets = torch.tensor([32, 32], dtype=torch.int32)
    kw = dict(sink_pages=1, local_pages=2, max_budget=32, page_size=16)
    got = block_sparse_indexer_cpu(b.q, cent, b.page_table, b.seq_lens, budgets, **kw)
    assert torch.equal(got, block_sparse_indexer_ref(b.q, cent, b.page_table, b.seq_lens, budgets, **kw))


def test_page_sets_match_flow_runner_select(make_paged_batch):
    """The ``cpu`` kernel set's runner (this indexer) picks the pages of the flow written with format-aware
    ops (the ``torch`` set)."""
    config = SparseConfig(page_size=16, budget_pages=10, sink_pages=2, local_pages=1,
                          budget_schedule=((200, 6), (400, 8)))
    b = make_paged_batch(SEQ_LENS, q_heads=8, kv_heads=2, head_dim=64, seed=4)
    make = lambda kernels: FlowRunner("block_sparse_attention", config, num_q_heads=8, num_kv_heads=2,
                                      head_dim=64, kernel_backend=kernels)
    runner = make("cpu")
    cache = {"k": b.k_cache, "v": b.v_cache, **runner.allocate_state(b.k_cache.shape[0], dtype=b.k_cache.dtype,
                                                                     device="cpu")}
    cache["centroids"].copy_(_centroids(b.k_cache.shape[0], 2, 64, torch.float32, seed=5))
    ctx = runner.plan(b.page_table, b.seq_lens)
    assert _page_sets(runner.select(b.q, cache, ctx)) == _page_sets(make("torch").select(b.q, cache, ctx))


def test_bad_inputs_raise_clear_errors(make_paged_batch):
    b = make_paged_batch([40], q_heads=4, kv_heads=2, head_dim=64)
    cent = _centroids(b.k_cache.shape[0], 2, 64, torch.float32)
    budgets = torch.tensor([4], dtype=torch.int32)
    with pytest.raises(ValueError, match="max_budget"):
        block_sparse_indexer_cpu(b.q, cent, b.page_table, b.seq_lens, budgets, sink_pages=3, local_pages=2,
                                 max_budget=4)
    meta = [t.to("meta") for t in (b.q, cent, b.page_table, b.seq_lens, budgets)]
    with pytest.raises(ValueError, match="CPU tensors, got q on meta"):
        block_sparse_indexer_cpu(*meta, sink_pages=1, local_pages=1, max_budget=4)

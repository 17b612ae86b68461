"""The CPU kernels' per-step scratch: every layer of a step gives what a call without one gives, bit for
bit, and a scratch handed tensors of another step derives afresh instead of reusing stale metadata."""

import torch

from vortex_rl.kernels.cpu_append import append_kv_and_centroids_cpu, write_kv_cpu
from vortex_rl.kernels.cpu_decode import dense_decode_attention_cpu, sparse_decode_attention_cpu
from vortex_rl.kernels.cpu_indexer import block_sparse_indexer_cpu
from vortex_rl.kernels.cpu_step import once_per_step
from vortex_rl.sparse import FlowRunner, SparseConfig

SEQ_LENS = [1, 15, 17, 100, 333, 700]  # 1 to 44 pages: some fit the budget, some overflow it
INDEX = dict(sink_pages=1, local_pages=2, max_budget=12, page_size=16)


def test_once_per_step_reuses_only_for_the_same_tensor_objects():
    calls = []
    a, b = torch.zeros(3), torch.zeros(3)

    def derive(x):
        calls.append(x)
        return len(calls)

    scratch = {}
    assert once_per_step(scratch, ("k",), (a,), lambda: derive(a)) == 1
    assert once_per_step(scratch, ("k",), (a,), lambda: derive(a)) == 1  # same object: kept
    assert once_per_step(scratch, ("k",), (b,), lambda: derive(b)) == 2  # equal values, another object: derived
    assert once_per_step(scratch, ("other",), (b,), lambda: derive(b)) == 3  # another key
    assert once_per_step(None, ("k",), (b,), lambda: derive(b)) == 4  # no scratch: every time
    assert calls == [a, b, b, b]


def _layers(make_paged_batch, n=3):
    """``n`` layers' worth of caches, centroids and queries over one step's page table and lengths."""
    layers = [make_paged_batch(SEQ_LENS, q_heads=4, kv_heads=2, head_dim=32, seed=s) for s in range(n)]
    gen = torch.Generator().manual_seed(9)
    cents = [torch.randn(b.k_cache.shape[0], 2, 1, 32, generator=gen) for b in layers]
    return layers, cents


def test_every_layer_of_a_step_matches_calls_without_scratch(make_paged_batch):
    layers, cents = _layers(make_paged_batch)
    table, lens = layers[0].page_table, layers[0].seq_lens  # the same page layout for every seed
    budgets = torch.tensor([8, 8, 8, 8, 12, 10], dtype=torch.int32)
    scratch = {}
    for b, cent in zip(layers, cents):
        pages = block_sparse_indexer_cpu(b.q, cent, table, lens, budgets, **INDEX, scratch=scratch)
        assert torch.equal(pages, block_sparse_indexer_cpu(b.q, cent, table, lens, budgets, **INDEX))
        got = sparse_decode_attention_cpu(b.q, b.k_cache, b.v_cache, table, lens, pages, list_lens=budgets,
                                          scratch=scratch)
        want = sparse_decode_attention_cpu(b.q, b.k_cache, b.v_cache, table, lens, pages, list_lens=budgets)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        got = dense_decode_attention_cpu(b.q, b.k_cache, b.v_cache, table, lens, scratch=scratch)
        want = dense_decode_attention_cpu(b.q, b.k_cache, b.v_cache, table, lens)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert {key[0] for key in scratch} == {"block_sparse_indexer", "sparse_decode", "dense_decode"}


def test_a_scratch_given_another_steps_tensors_derives_afresh(make_paged_batch):
    """Step 2's lengths (one token more, a new tensor) through step 1's scratch: the result is step 2's,
    not step 1's metadata (the last page's fill, the pages a request always keeps)."""
    (b,), (cent,) = _layers(make_paged_batch, n=1)
    budgets = torch.tensor([8, 8, 8, 8, 12, 10], dtype=torch.int32)
    scratch = {}
    block_sparse_indexer_cpu(b.q, cent, b.page_table, b.seq_lens, budgets, **INDEX, scratch=scratch)
    shorter = b.seq_lens - 1
    shorter[0] = 1
    pages = block_sparse_indexer_cpu(b.q, cent, b.page_table, shorter, budgets, **INDEX, scratch=scratch)
    assert torch.equal(pages, block_sparse_indexer_cpu(b.q, cent, b.page_table, shorter, budgets, **INDEX))
    sparse_decode_attention_cpu(b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens, pages, scratch=scratch)
    got = sparse_decode_attention_cpu(b.q, b.k_cache, b.v_cache, b.page_table, shorter, pages, scratch=scratch)
    want = sparse_decode_attention_cpu(b.q, b.k_cache, b.v_cache, b.page_table, shorter, pages)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_cache_writes_through_one_scratch_match_writes_without(make_paged_batch):
    layers, _ = _layers(make_paged_batch)
    loc = torch.tensor([3 * 16 + 5, -1, 7 * 16, 1 * 16 + 15])  # one padding row, skipped
    gen = torch.Generator().manual_seed(3)
    scratch = {}
    for b in layers:
        k, v = torch.randn(4, 2, 32, generator=gen), torch.randn(4, 2, 32, generator=gen)
        got = [b.k_cache.clone(), b.v_cache.clone(), torch.zeros(b.k_cache.shape[0], 2, 1, 32)]
        want = [t.clone() for t in got]
        append_kv_and_centroids_cpu(k, v, *got, loc, scratch=scratch)
        append_kv_and_centroids_cpu(k, v, *want, loc)
        assert all(torch.equal(x, y) for x, y in zip(got, want))
        write_kv_cpu(k, v, *got[:2], loc + 1, scratch=scratch)  # a new loc tensor: its own slots
        write_kv_cpu(k, v, *want[:2], loc + 1)
        assert all(torch.equal(x, y) for x, y in zip(got, want))


def test_flow_runner_gives_a_scratch_to_the_cpu_kernels_only(make_paged_batch):
    b = make_paged_batch([40, 70], q_heads=4, kv_heads=2, head_dim=32)
    config = SparseConfig(page_size=16, budget_pages=4)
    make = lambda backend: FlowRunner("block_sparse_attention", config, num_q_heads=4, num_kv_heads=2, head_dim=32,
                                      kernel_backend=backend)
    assert make("cpu").plan(b.page_table, b.seq_lens).kernel_scratch == {}
    assert make("torch").plan(b.page_table, b.seq_lens).kernel_scratch is None

"""Flows end to end: equivalence with dense attention, selection invariants, page choices."""

from __future__ import annotations

import pytest
import torch

from tests.paged_batch import naive_attention
from vortex_rl.sparse import SparseConfig, list_flows, run_flow

FLOWS = ["block_sparse_attention", "quest", "streaming", "dense"]
LENGTHS = [[1], [15, 16, 17], [33, 200, 1, 97], [300, 129]]


def test_builtin_flows_registered():
    assert set(FLOWS) <= set(list_flows())


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_full_budget_equals_dense(make_paged_batch, flow, group, lengths):
    """With a budget covering every page, each flow is dense attention (fp32, 1e-5)."""
    batch = make_paged_batch(lengths, q_heads=2 * group, kv_heads=2)
    max_pages = max((n + 15) // 16 for n in lengths)
    config = SparseConfig(budget_pages=max(max_pages, 3))
    o, lse, pages = run_flow(flow, batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens, config)
    for b in range(len(lengths)):
        ref_o, ref_lse = naive_attention(batch.q[b], batch.keys[b], batch.values[b])
        torch.testing.assert_close(o[b].double(), ref_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[b].double(), ref_lse, atol=1e-5, rtol=1e-5)


def _check_pages(pages_phys, batch, config, b, h):
    n = (int(batch.seq_lens[b]) + config.page_size - 1) // config.page_size
    row = pages_phys[b, h]
    chosen = row[row >= 0].tolist()
    to_logical = {int(p): i for i, p in enumerate(batch.page_table[b].tolist()) if p >= 0}
    logical = [to_logical[p] for p in chosen]  # KeyError: a page not of this request
    budget = config.budget_for(int(batch.seq_lens[b]))
    assert len(logical) == len(set(logical)), f"duplicates in {logical}"
    assert all(0 <= p < n for p in logical), f"page beyond the sequence in {logical} (n={n})"
    assert len(logical) == min(budget, n)
    must = set(range(min(config.sink_pages, n))) | set(range(max(0, n - config.local_pages), n))
    assert must <= set(logical), f"sink/local {must} missing from {logical}"
    assert (row[len(chosen):] == -1).all(), "valid pages must come first"
    return logical


@pytest.mark.parametrize("flow", ["block_sparse_attention", "quest", "streaming"])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_selection_invariants(make_paged_batch, flow, group):
    lengths = [1, 15, 17, 64, 250, 513, 1000]
    batch = make_paged_batch(lengths, q_heads=2 * group, kv_heads=2, seed=group)
    config = SparseConfig(budget_pages=8, sink_pages=1, local_pages=2)
    _, _, pages = run_flow(flow, batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens, config)
    assert pages.shape == (len(lengths), 2, 8)
    for b in range(len(lengths)):
        for h in range(2):
            logical = _check_pages(pages, batch, config, b, h)
            if flow == "streaming":  # sink + the most recent pages
                n = (lengths[b] + 15) // 16
                assert set(logical) == {0} | set(range(max(0, n - 7), n))


def test_budget_schedule_gives_per_request_budgets(make_paged_batch):
    lengths = [100, 600, 2000]
    batch = make_paged_batch(lengths, seed=3)
    config = SparseConfig(budget_pages=20, budget_schedule=((256, 4), (1024, 12)))
    assert [config.budget_for(n) for n in lengths] == [4, 12, 20]
    _, _, pages = run_flow("block_sparse_attention", batch.q, batch.k_cache, batch.v_cache, batch.page_table,
                           batch.seq_lens, config)
    assert pages.shape[-1] == 20
    for b in range(3):
        for h in range(2):
            _check_pages(pages, batch, config, b, h)


def _direct_block_sparse(batch, config, b, h):
    """Centroid scores + top-k, written out per request with plain loops."""
    n_tok = int(batch.seq_lens[b])
    n = (n_tok + config.page_size - 1) // config.page_size
    k = batch.keys[b][:, h].double()
    group = batch.q.shape[1] // batch.k_cache.shape[1]
    q_mean = batch.q[b, h * group : (h + 1) * group].double().mean(0)
    scores = {p: float(k[p * 16 : min((p + 1) * 16, n_tok)].mean(0) @ q_mean) for p in range(n)}
    sink = set(range(min(config.sink_pages, n)))
    local = set(range(max(0, n - config.local_pages), n))
    candidates = sorted((p for p in range(n) if p not in sink | local), key=lambda p: -scores[p])
    k_pages = config.budget_for(n_tok) - config.sink_pages - config.local_pages
    return sink | local | set(candidates[:k_pages])


@pytest.mark.parametrize("group", [1, 4])
def test_block_sparse_matches_direct_topk(make_paged_batch, group):
    lengths = [17, 160, 400, 777]
    batch = make_paged_batch(lengths, q_heads=2 * group, kv_heads=2, seed=11)
    config = SparseConfig(budget_pages=6)
    _, _, pages = run_flow("block_sparse_attention", batch.q, batch.k_cache, batch.v_cache, batch.page_table,
                           batch.seq_lens, config)
    for b in range(len(lengths)):
        for h in range(2):
            logical = _check_pages(pages, batch, config, b, h)
            assert set(logical) == _direct_block_sparse(batch, config, b, h)


def test_quest_matches_direct_upper_bound(make_paged_batch):
    lengths = [300, 500]
    batch = make_paged_batch(lengths, q_heads=4, kv_heads=2, seed=5)
    config = SparseConfig(budget_pages=7)
    _, _, pages = run_flow("quest", batch.q, batch.k_cache, batch.v_cache, batch.page_table, batch.seq_lens, config)
    for b, n_tok in enumerate(lengths):
        n = (n_tok + 15) // 16
        for h in range(2):
            k = batch.keys[b][:, h].double()
            qs = batch.q[b, 2 * h : 2 * h + 2].double()
            bound = {}
            for p in range(n):
                kp = k[p * 16 : (p + 1) * 16]
                kmin, kmax = kp.min(0).values, kp.max(0).values
                bound[p] = float(sum(torch.maximum(qq * kmin, qq * kmax).sum() for qq in qs))
            cands = sorted(range(1, n - 2), key=lambda p: -bound[p])[: 7 - 3]
            logical = _check_pages(pages, batch, config, b, h)
            assert set(logical) == {0, n - 2, n - 1} | set(cands)


def test_sparse_attention_equals_attention_over_selected_tokens(make_paged_batch):
    lengths = [350, 90]
    batch = make_paged_batch(lengths, q_heads=4, kv_heads=2, seed=2)
    config = SparseConfig(budget_pages=5)
    o, lse, pages = run_flow("block_sparse_attention", batch.q, batch.k_cache, batch.v_cache, batch.page_table,
                             batch.seq_lens, config)
    for b, n_tok in enumerate(lengths):
        phys_to_logical = {int(p): i for i, p in enumerate(batch.page_table[b].tolist()) if p >= 0}
        mask = torch.zeros(n_tok, 2, dtype=torch.bool)
        for h in range(2):
            for p in pages[b, h][pages[b, h] >= 0].tolist():
                lp = phys_to_logical[p]
                mask[lp * 16 : (lp + 1) * 16, h] = True
        ref_o, ref_lse = naive_attention(batch.q[b], batch.keys[b], batch.values[b], token_mask=mask)
        torch.testing.assert_close(o[b].double(), ref_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[b].double(), ref_lse, atol=1e-5, rtol=1e-5)

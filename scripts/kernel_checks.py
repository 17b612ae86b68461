"""Every Triton kernel against its torch reference at the real decode shape (``gpu_check.py``'s first phase).

The unit tests (``tests/kernels``) hold the kernels to their references at tiny shapes in the Triton
interpreter; this runs the same comparisons where only a GPU can: bf16, head_dim 128, 8 KV heads with
GQA 1/2/4, contexts from 1 token to 128K in one batch, and the indexer at its 16,384-page limit. With
``smoke=True`` it runs tiny fp32 shapes so CI exercises it on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl import kernels

# (atol, rtol) of o, and atol of lse, against the fp32 reference, per input dtype (as tests/paged_batch.py)
TOL = {torch.float32: (2e-5, 1e-5, 2e-5), torch.float16: (4e-3, 4e-3, 2e-3), torch.bfloat16: (3e-2, 2e-2, 2e-2)}
MIN_EQUAL_SETS = 0.99  # indexer vs reference: bf16 score ties may swap a page or two in rare rows


@dataclass(frozen=True)
class Shape:
    kv_heads: int
    head_dim: int
    page_size: int
    dtype: torch.dtype
    contexts: tuple[int, ...]
    groups: tuple[int, ...]
    budget: int
    indexer_pages: int  # requests of this many pages for the indexer-at-its-limit check


SMOKE = Shape(kv_heads=2, head_dim=16, page_size=16, dtype=torch.float32, contexts=(1, 15, 17, 40, 100),
              groups=(1, 2, 4), budget=4, indexer_pages=64)
REAL = Shape(kv_heads=8, head_dim=128, page_size=16, dtype=torch.bfloat16,
             contexts=(1, 15, 17, 1000, 4096, 16384, 65536, 131072), groups=(1, 2, 4), budget=32,
             indexer_pages=16384)


def paged_cache(seq_lens: list[int], shape: Shape, device, seed: int):
    """K/V caches with each request's pages shuffled over the pool, and its page table (``-1`` padding)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pages_per = [(n + shape.page_size - 1) // shape.page_size for n in seq_lens]
    num_pages = sum(pages_per) + 2
    perm = torch.randperm(num_pages, generator=gen).to(torch.int32)
    table = torch.full((len(seq_lens), max(pages_per) + 2), -1, dtype=torch.int32)
    used = 0
    for b, p in enumerate(pages_per):
        table[b, :p] = perm[used:used + p]
        used += p
    size = (num_pages, shape.kv_heads, shape.page_size, shape.head_dim)
    # Drawn on the device: at 128K tokens the caches are ~220M values each, seconds of host work and copies.
    values = torch.Generator(device=device).manual_seed(seed)
    k_cache = torch.randn(size, generator=values, device=device).to(shape.dtype)
    v_cache = torch.randn(size, generator=values, device=device).to(shape.dtype)
    return k_cache, v_cache, table.to(device), torch.tensor(seq_lens, dtype=torch.int32, device=device)


def attention_error(got, want, dtype) -> tuple[float, float, bool]:
    atol, rtol, lse_tol = TOL[dtype]
    o_err = ((got[0].float() - want[0].float()).abs() - rtol * want[0].float().abs()).max().item()
    finite = torch.isfinite(want[1])
    lse_err = (got[1][finite] - want[1][finite]).abs().max().item() if finite.any() else 0.0
    same_empty = torch.equal(torch.isfinite(got[1]), finite)
    return o_err, lse_err, o_err <= atol and lse_err <= lse_tol and same_empty


def check_decode(shape: Shape, device) -> list[dict]:
    rows = []
    for group in shape.groups:
        q_heads = shape.kv_heads * group
        seq_lens = list(shape.contexts)
        k_cache, v_cache, table, lens = paged_cache(seq_lens, shape, device, seed=group)
        q = torch.randn(len(seq_lens), q_heads, shape.head_dim, device=device).to(shape.dtype)
        got = kernels.dense_decode_attention(q, k_cache, v_cache, table, lens)
        want = kernels.dense_decode_attention_ref(q, k_cache, v_cache, table, lens)
        o_err, lse_err, ok = attention_error(got, want, shape.dtype)
        rows.append({"check": "dense_decode", "gqa": group, "contexts": f"{min(seq_lens)}..{max(seq_lens)}",
                     "err_o": o_err, "err_lse": lse_err, "ok": ok})

        centroids = torch.zeros(k_cache.shape[0], shape.kv_heads, 1, shape.head_dim, device=device, dtype=shape.dtype)
        slots = all_slots(table, lens, shape.page_size)
        kernels.update_centroids_ref(k_cache, centroids, slots)
        budgets = torch.full((len(seq_lens),), shape.budget, dtype=torch.int32, device=device)
        select = dict(sink_pages=1, local_pages=2, max_budget=shape.budget, page_size=shape.page_size)
        pages = kernels.block_sparse_indexer(q, centroids, table, lens, budgets, **select)
        pages_ref = kernels.block_sparse_indexer_ref(q, centroids, table, lens, budgets, **select)
        equal = (pages.sort(-1).values == pages_ref.sort(-1).values).all(-1).float().mean().item()
        rows.append({"check": "block_sparse_indexer", "gqa": group, "contexts": f"{min(seq_lens)}..{max(seq_lens)}",
                     "equal_sets": equal, "ok": equal >= MIN_EQUAL_SETS})
        got = kernels.sparse_decode_attention(q, k_cache, v_cache, table, lens, pages)
        want = kernels.sparse_decode_attention_ref(q, k_cache, v_cache, table, lens, pages)
        o_err, lse_err, ok = attention_error(got, want, shape.dtype)
        rows.append({"check": "sparse_decode", "gqa": group, "contexts": f"{min(seq_lens)}..{max(seq_lens)}",
                     "err_o": o_err, "err_lse": lse_err, "ok": ok})
        del k_cache, v_cache, centroids
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def all_slots(table: torch.Tensor, lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """Cache slots of every token of every request (page * page_size + offset)."""
    pos = torch.arange(table.shape[1] * page_size, device=table.device)
    slots = table.long()[:, pos // page_size] * page_size + pos % page_size
    return slots[pos[None, :] < lens.long()[:, None]]


def check_indexer_at_limit(shape: Shape, device) -> list[dict]:
    """The indexer over requests of ``indexer_pages`` pages (16,384 = 256K tokens on the GPU): centroids only."""
    batch, pages = 2, shape.indexer_pages
    gen = torch.Generator(device="cpu").manual_seed(7)
    centroids = torch.randn(batch * pages, shape.kv_heads, 1, shape.head_dim, generator=gen).to(device, shape.dtype)
    table = torch.randperm(batch * pages, generator=gen).to(torch.int32).view(batch, pages).to(device)
    lens = torch.full((batch,), pages * shape.page_size, dtype=torch.int32, device=device)
    budgets = torch.full((batch,), shape.budget, dtype=torch.int32, device=device)
    q = torch.randn(batch, shape.kv_heads * 2, shape.head_dim, generator=gen).to(device, shape.dtype)
    select = dict(sink_pages=1, local_pages=2, max_budget=shape.budget, page_size=shape.page_size)
    want = kernels.block_sparse_indexer_ref(q, centroids, table, lens, budgets, **select)
    rows = []
    for chunks in (1, None):  # one fused program per row; scores over chunks (automatic at batch 2) + selection
        got = kernels.block_sparse_indexer(q, centroids, table, lens, budgets, num_chunks=chunks, **select)
        equal = (got.sort(-1).values == want.sort(-1).values).all(-1).float().mean().item()
        rows.append({"check": "indexer_max_pages", "pages": pages, "chunks": chunks or "auto", "equal_sets": equal,
                     "ok": equal >= MIN_EQUAL_SETS})
    return rows


def check_cache_writes(shape: Shape, device) -> list[dict]:
    """``write_kv``, ``pool_pages`` and the fused ``append_kv_and_centroids`` on a decode step's tokens."""
    k_cache, v_cache, table, lens = paged_cache([33, 16, 1, 250], shape, device, seed=3)
    loc = table.long()[torch.arange(4, device=device), (lens.long() - 1) // shape.page_size] * shape.page_size \
        + (lens.long() - 1) % shape.page_size  # each request's newest token
    k = torch.randn(4, shape.kv_heads, shape.head_dim, device=device).to(shape.dtype)
    v = torch.randn_like(k)
    rows = []
    caches = {name: (k_cache.clone(), v_cache.clone()) for name in ("kernel", "ref")}
    kernels.write_kv(k, v, *caches["kernel"], loc)
    kernels.write_kv_ref(k, v, *caches["ref"], loc)
    rows.append({"check": "write_kv", "ok": all(torch.equal(a, b) for a, b in zip(caches["kernel"], caches["ref"]))})
    shape_c = (k_cache.shape[0], shape.kv_heads, 1, shape.head_dim)
    pooled = [torch.zeros(shape_c, device=device, dtype=shape.dtype) for _ in range(2)]
    kernels.pool_pages(caches["kernel"][0], pooled[0], loc, pool="mean")
    kernels.pool_pages_ref(caches["ref"][0], pooled[1], loc, pool="mean")
    err = (pooled[0].float() - pooled[1].float()).abs().max().item()
    rows.append({"check": "pool_pages", "err": err, "ok": err <= TOL[shape.dtype][0]})
    fused = [(k_cache.clone(), v_cache.clone(), torch.zeros(shape_c, device=device, dtype=shape.dtype)) for _ in range(2)]
    kernels.append_kv_and_centroids(k, v, *fused[0], loc)
    kernels.append_kv_and_centroids_ref(k, v, *fused[1], loc)
    err = (fused[0][2].float() - fused[1][2].float()).abs().max().item()
    same_kv = torch.equal(fused[0][0], fused[1][0]) and torch.equal(fused[0][1], fused[1][1])
    rows.append({"check": "append_kv_and_centroids", "err": err, "ok": same_kv and err <= TOL[shape.dtype][0]})
    return rows


def check_merge(shape: Shape, device) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(5)
    o_a, o_b = (torch.randn(64, 16, shape.head_dim, generator=gen).to(device, shape.dtype) for _ in range(2))
    lse_a, lse_b = (torch.randn(64, 16, generator=gen).to(device) * 4 for _ in range(2))
    lse_a[0] = float("-inf")  # an empty side
    got = kernels.merge_states(o_a, lse_a, o_b, lse_b)
    want = kernels.merge_states_ref(o_a, lse_a, o_b, lse_b)
    o_err, lse_err, ok = attention_error(got, want, shape.dtype)
    return [{"check": "merge_states", "err_o": o_err, "err_lse": lse_err, "ok": ok}]


def check_all_kernels(device: torch.device, *, smoke: bool) -> list[dict]:
    if not kernels.HAS_TRITON:
        raise RuntimeError("the kernel checks need Triton (pip install triton)")
    shape = SMOKE if smoke else REAL
    torch.manual_seed(0)
    return (check_decode(shape, device) + check_indexer_at_limit(shape, device) + check_cache_writes(shape, device)
            + check_merge(shape, device))

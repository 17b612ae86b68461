"""Random paged KV caches for tests, with a contiguous copy to compute references from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PagedBatch:
    q: torch.Tensor  # [batch, q_heads, head_dim]
    k_cache: torch.Tensor  # [num_pages, kv_heads, page_size, head_dim]
    v_cache: torch.Tensor
    page_table: torch.Tensor  # [batch, max_pages] int32
    seq_lens: torch.Tensor  # [batch] int32
    keys: list  # per request [seq_len, kv_heads, head_dim]
    values: list


def make_paged_batch(seq_lens, *, q_heads=4, kv_heads=2, head_dim=16, page_size=16, spare_pages=5,
                     dtype=torch.float32, seed=0) -> PagedBatch:
    """Requests laid out on shuffled physical pages, padding pages filled with garbage."""
    gen = torch.Generator().manual_seed(seed)
    pages_per = [(n + page_size - 1) // page_size for n in seq_lens]
    num_pages = sum(pages_per) + spare_pages
    max_pages = max(pages_per) + 2
    k_cache = torch.randn(num_pages, kv_heads, page_size, head_dim, generator=gen).to(dtype) * 50
    v_cache = torch.randn(num_pages, kv_heads, page_size, head_dim, generator=gen).to(dtype) * 50
    perm = torch.randperm(num_pages, generator=gen)
    page_table = torch.full((len(seq_lens), max_pages), -1, dtype=torch.int32)
    keys, values, used = [], [], 0
    for b, (n, p) in enumerate(zip(seq_lens, pages_per)):
        phys = perm[used : used + p]
        used += p
        page_table[b, :p] = phys.to(torch.int32)
        k = torch.randn(n, kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(n, kv_heads, head_dim, generator=gen).to(dtype)
        for t in range(n):
            k_cache[phys[t // page_size], :, t % page_size] = k[t]
            v_cache[phys[t // page_size], :, t % page_size] = v[t]
        keys.append(k)
        values.append(v)
    q = torch.randn(len(seq_lens), q_heads, head_dim, generator=gen).to(dtype)
    return PagedBatch(q, k_cache, v_cache, page_table, torch.tensor(seq_lens, dtype=torch.int32), keys, values)


def naive_attention(q_row, keys, values, token_mask=None):
    """Attention of one request, loop over query heads: q_row [q_heads, d], keys/values [n, kv_heads, d].

    Returns (o [q_heads, d], lse [q_heads]) in float64."""
    q_heads, d = q_row.shape
    kv_heads = keys.shape[1]
    group = q_heads // kv_heads
    outs, lses = [], []
    for h in range(q_heads):
        k = keys[:, h // group].double()
        v = values[:, h // group].double()
        s = (k @ q_row[h].double()) / d**0.5
        if token_mask is not None:
            s = s[token_mask[:, h // group]]
            v = v[token_mask[:, h // group]]
        lse = torch.logsumexp(s, 0)
        outs.append(torch.softmax(s, 0) @ v)
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)

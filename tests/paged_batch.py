"""Random paged decode batches for the kernel and sparse tests, and the plain references they are checked
against (tiny shapes: without a GPU, Triton runs in its interpreter).

``make_paged_batch`` is the plain function; ``tests/conftest.py`` offers it as the session fixture
``make_paged_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# bf16 arithmetic is unreliable in the interpreter: bf16 runs on the GPU only.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
# (atol, rtol) of a kernel output against its fp32 reference, per input dtype.
TOL = {torch.float32: (2e-5, 1e-5), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 2e-2)}
LSE_TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
# Slots no request owns hold values this much larger than the tokens, so reading one shows.
GARBAGE_SCALE = 50.0

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@dataclass
class PagedBatch:
    q: torch.Tensor  # [batch, q_heads, head_dim]
    k_cache: torch.Tensor  # [num_pages, kv_heads, page_size, head_dim]
    v_cache: torch.Tensor
    page_table: torch.Tensor  # [batch, max_pages] int32, -1 padding
    seq_lens: torch.Tensor  # [batch] int32
    keys: list[torch.Tensor]  # per request [seq_len, kv_heads, head_dim], in token order
    values: list[torch.Tensor]

    @property
    def num_pages(self) -> list[int]:
        page_size = self.k_cache.shape[2]
        return [(int(n) + page_size - 1) // page_size for n in self.seq_lens.tolist()]


def make_paged_batch(seq_lens, *, q_heads=4, kv_heads=2, head_dim=16, page_size=16, dtype=torch.float32,
                     device="cpu", seed=0, spare_pages=2) -> PagedBatch:
    """Requests laid out on shuffled physical pages; unused slots and ``spare_pages`` extra pages hold
    garbage (``GARBAGE_SCALE`` times larger). The page table has two ``-1`` columns past the longest
    request. Drawn in float32 on the CPU, then cast to ``dtype`` and moved to ``device``."""
    gen = torch.Generator().manual_seed(seed)
    pages_per = [(n + page_size - 1) // page_size for n in seq_lens]
    num_pages = sum(pages_per) + spare_pages
    shape = (num_pages, kv_heads, page_size, head_dim)
    k_cache = torch.randn(shape, generator=gen) * GARBAGE_SCALE
    v_cache = torch.randn(shape, generator=gen) * GARBAGE_SCALE
    page_table = torch.full((len(seq_lens), max(pages_per) + 2), -1, dtype=torch.int32)
    perm = torch.randperm(num_pages, generator=gen).to(torch.int32)
    used = 0
    for b, (n, p) in enumerate(zip(seq_lens, pages_per)):
        page_table[b, :p] = perm[used : used + p]
        used += p
        tokens = torch.arange(n)
        pages, offsets = page_table[b, tokens // page_size].long(), tokens % page_size
        k_cache[pages, :, offsets] = torch.randn(n, kv_heads, head_dim, generator=gen)
        v_cache[pages, :, offsets] = torch.randn(n, kv_heads, head_dim, generator=gen)
    q = torch.randn(len(seq_lens), q_heads, head_dim, generator=gen)
    k_cache, v_cache = k_cache.to(device, dtype), v_cache.to(device, dtype)
    keys, values = [], []
    for b, n in enumerate(seq_lens):
        tokens = torch.arange(n, device=device)
        pages, offsets = page_table.to(device)[b, tokens // page_size].long(), tokens % page_size
        keys.append(k_cache[pages, :, offsets])
        values.append(v_cache[pages, :, offsets])
    return PagedBatch(q.to(device, dtype), k_cache, v_cache, page_table.to(device),
                      torch.tensor(seq_lens, dtype=torch.int32, device=device), keys, values)


def random_page_ids(batch: PagedBatch, budget: int, *, seed=0) -> torch.Tensor:
    """``[batch, kv_heads, budget]`` int32 on the batch's device: a random subset of each request's
    pages as *physical* ids (the ``pages`` argument of sparse decode attention), ``-1`` anywhere."""
    gen = torch.Generator().manual_seed(seed)
    kv_heads = batch.k_cache.shape[1]
    ids = torch.full((len(batch.num_pages), kv_heads, budget), -1, dtype=torch.int32)
    for b, n in enumerate(batch.num_pages):
        for h in range(kv_heads):
            take = int(torch.randint(1, min(n, budget) + 1, (1,), generator=gen))
            row = torch.cat([torch.randperm(n, generator=gen)[:take], torch.full((budget - take,), -1)])
            ids[b, h] = row[torch.randperm(budget, generator=gen)].to(torch.int32)
    return to_physical(batch.page_table.cpu(), ids).to(batch.q.device)


def to_physical(page_table: torch.Tensor, logical: torch.Tensor) -> torch.Tensor:
    """Logical page ids ``[batch, ...]`` to physical ids through ``page_table`` (``-1`` stays ``-1``)."""
    flat = logical.reshape(logical.shape[0], -1).long()
    phys = torch.gather(page_table.long(), 1, flat.clamp(min=0))
    return torch.where(flat >= 0, phys, torch.full_like(phys, -1)).view(logical.shape).to(torch.int32)


def naive_attention(q_row, keys, values, token_mask=None):
    """Attention of one request, loop over query heads: q_row [q_heads, d], keys/values [n, kv_heads, d];
    ``token_mask`` [n, kv_heads] bool keeps only the tokens each KV head attends to.

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


def assert_attention_close(got, want, dtype) -> None:
    """``(o, lse)`` pairs agree within the dtype's tolerance (``-inf`` lse where nothing is attended)."""
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got[0].float(), want[0].float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(got[1], want[1], atol=LSE_TOL[dtype], rtol=0)

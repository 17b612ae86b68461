"""Random paged decode batches for the kernel tests (tiny shapes: the CPU runs Triton's interpreter)."""

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

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@dataclass
class PagedBatch:
    q: torch.Tensor  # [batch, q_heads, head_dim]
    k_cache: torch.Tensor  # [num_pages, kv_heads, page_size, head_dim]
    v_cache: torch.Tensor
    page_table: torch.Tensor  # [batch, max_pages] int32, -1 padding
    seq_lens: torch.Tensor  # [batch] int32

    @property
    def num_pages(self) -> list[int]:
        page_size = self.k_cache.shape[2]
        return [(int(n) + page_size - 1) // page_size for n in self.seq_lens.tolist()]


def make_batch(seq_lens, *, q_heads=4, kv_heads=2, head_dim=64, page_size=16, dtype=torch.float32,
               seed=0, spare_pages=2) -> PagedBatch:
    """Requests on shuffled physical pages; unused slots and spare pages hold random garbage."""
    gen = torch.Generator().manual_seed(seed)
    pages_per = [(n + page_size - 1) // page_size for n in seq_lens]
    num_pages = sum(pages_per) + spare_pages
    shape = (num_pages, kv_heads, page_size, head_dim)
    k_cache = torch.randn(shape, generator=gen)
    v_cache = torch.randn(shape, generator=gen)
    page_table = torch.full((len(seq_lens), max(pages_per) + 1), -1, dtype=torch.int32)
    perm = torch.randperm(num_pages, generator=gen).to(torch.int32)
    used = 0
    for b, p in enumerate(pages_per):
        page_table[b, :p] = perm[used : used + p]
        used += p
    q = torch.randn(len(seq_lens), q_heads, head_dim, generator=gen)
    return PagedBatch(
        q.to(DEVICE, dtype), k_cache.to(DEVICE, dtype), v_cache.to(DEVICE, dtype), page_table.to(DEVICE),
        torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
    )


def random_page_ids(batch: PagedBatch, budget: int, *, seed=0) -> torch.Tensor:
    """``[batch, kv_heads, budget]`` int32: a random subset of each request's pages, -1 anywhere."""
    gen = torch.Generator().manual_seed(seed)
    kv_heads = batch.k_cache.shape[1]
    ids = torch.full((len(batch.num_pages), kv_heads, budget), -1, dtype=torch.int32)
    for b, n in enumerate(batch.num_pages):
        for h in range(kv_heads):
            take = int(torch.randint(1, min(n, budget) + 1, (1,), generator=gen))
            row = torch.cat([torch.randperm(n, generator=gen)[:take], torch.full((budget - take,), -1)])
            ids[b, h] = row[torch.randperm(budget, generator=gen)].to(torch.int32)
    return ids.to(DEVICE)


def assert_attention_close(got, want, dtype) -> None:
    """``(o, lse)`` pairs agree within the dtype's tolerance (``-inf`` lse where nothing is attended)."""
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got[0].float(), want[0].float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(got[1], want[1], atol=LSE_TOL[dtype], rtol=0)

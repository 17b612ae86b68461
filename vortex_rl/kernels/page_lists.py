"""The page lists every decode kernel reads (layout in :mod:`vortex_rl.kernels.paged_decode`): input
checks, the ``list_lens`` prefix, all of a request's pages as a list, and the valid-token mask of listed
pages. Plain torch; the kernels and their references share these."""

import torch


def check_decode_inputs(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    pages: torch.Tensor | None = None,
    list_lens: torch.Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the offending argument when shapes or dtypes do not fit."""
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, q_heads, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            "k_cache and v_cache must both be [num_pages, kv_heads, page_size, head_dim], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    batch, q_heads, head_dim = q.shape
    _, kv_heads, _, cache_dim = k_cache.shape
    if cache_dim != head_dim:
        raise ValueError(f"q head_dim {head_dim} does not match the cache head_dim {cache_dim}")
    if q_heads % kv_heads != 0:
        raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({kv_heads})")
    if q.dtype != k_cache.dtype or k_cache.dtype != v_cache.dtype:
        raise ValueError(
            f"q, k_cache and v_cache must share a dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    if page_table.dim() != 2 or page_table.shape[0] != batch:
        raise ValueError(f"page_table must be [batch={batch}, max_pages], got {tuple(page_table.shape)}")
    if seq_lens.shape != (batch,):
        raise ValueError(f"seq_lens must be [batch={batch}], got {tuple(seq_lens.shape)}")
    for name, t in (("page_table", page_table), ("seq_lens", seq_lens)):
        if t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64, got {t.dtype}")
    if pages is not None:
        if pages.dim() != 3 or pages.shape[:2] != (batch, kv_heads):
            raise ValueError(
                f"pages must be [batch={batch}, kv_heads={kv_heads}, budget], got {tuple(pages.shape)}"
            )
        if pages.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"pages must be int32 or int64, got {pages.dtype}")
    if list_lens is not None:
        if pages is None:
            raise ValueError("list_lens bounds a sparse page list; dense decode takes none")
        if list_lens.shape != (batch,) or list_lens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"list_lens must be [batch={batch}] int32 or int64, got {tuple(list_lens.shape)} "
                             f"{list_lens.dtype}")


def listed_prefix(pages: torch.Tensor, list_lens: torch.Tensor | None) -> torch.Tensor:
    """``pages [batch, kv_heads, budget]`` with the entries at or after ``list_lens[b]`` set to ``-1``."""
    if list_lens is None:
        return pages
    column = torch.arange(pages.shape[-1], device=pages.device)
    keep = column[None, None, :] < list_lens.to(pages.device).long()[:, None, None]
    return torch.where(keep, pages, torch.full_like(pages, -1))


def all_page_ids(page_table: torch.Tensor, seq_lens: torch.Tensor, kv_heads: int, page_size: int) -> torch.Tensor:
    """Logical ids of every page of every request, ``-1`` past the last page.

    Returns ``[batch, kv_heads, max_pages]`` int32.
    """
    batch, max_pages = page_table.shape
    ids = torch.arange(max_pages, device=page_table.device, dtype=torch.int32).expand(batch, max_pages)
    num_pages = (seq_lens.to(torch.int32) + page_size - 1) // page_size
    ids = torch.where(ids < num_pages[:, None], ids, torch.full_like(ids, -1))
    return ids[:, None, :].expand(batch, kv_heads, max_pages).contiguous()


def all_pages(page_table: torch.Tensor, seq_lens: torch.Tensor, kv_heads: int, page_size: int) -> torch.Tensor:
    """Physical ids of every page of every request in logical order, ``-1`` past the last page.

    Returns ``[batch, kv_heads, max_pages]`` int32: the ``pages`` argument that makes sparse decode dense.
    """
    batch, max_pages = page_table.shape
    logical = torch.arange(max_pages, device=page_table.device, dtype=torch.int32).expand(batch, max_pages)
    num_pages = (seq_lens.to(torch.int32) + page_size - 1) // page_size
    pages = torch.where(logical < num_pages[:, None], page_table.to(torch.int32), torch.full_like(logical, -1))
    return pages[:, None, :].expand(batch, kv_heads, max_pages).contiguous()


def last_page_fill(page_table: torch.Tensor, seq_lens: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(last_page, last_fill)``, both ``[batch]`` int64: each request's last physical page (``-1`` for a
    request with no tokens) and the tokens it holds. Every other page of a request is full."""
    seq_lens = seq_lens.long()
    n = (seq_lens + page_size - 1) // page_size
    last_page = torch.gather(page_table.long(), 1, (n - 1).clamp(min=0)[:, None])[:, 0]
    last_page = torch.where(n > 0, last_page, torch.full_like(last_page, -1))
    return last_page, seq_lens - (n - 1) * page_size


def page_token_mask(pages: torch.Tensor, page_table: torch.Tensor, seq_lens: torch.Tensor,
                    page_size: int) -> torch.Tensor:
    """``[batch, kv_heads, budget, page_size]`` bool: the valid tokens of listed physical pages."""
    batch = pages.shape[0]
    last_page, last_fill = last_page_fill(page_table, seq_lens, page_size)
    last_page, last_fill = last_page.view(batch, 1, 1, 1), last_fill.view(batch, 1, 1, 1)
    slot = torch.arange(page_size, device=pages.device)
    full = (pages[..., None] != last_page) | (slot < last_fill)
    return (pages >= 0)[..., None] & full & (seq_lens > 0).view(batch, 1, 1, 1)

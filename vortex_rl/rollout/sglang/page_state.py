"""SGLang's KV pool seen as our paged cache: page-table views, and the flow's per-page state beside it.

SGLang keeps one K and one V buffer per layer (``MHATokenToKVPool``), token-major (``[slots, kv_heads,
head_dim]``, slot ``= page * page_size + offset``) or page-major (``[pages, kv_heads, page_size,
head_dim]``), and maps requests to slots in ``ReqToTokenPool.req_to_token`` (``[rows, max_context_len]``,
the slot of every token of a request). This module reads both without copying and keeps the flow's
extra state (e.g. key centroids) per physical page and layer, allocated in the memory-saver region of
the KV cache so that ``release_memory_occupation`` frees it with the cache.
"""

from __future__ import annotations

import torch

from vortex_rl.sparse import FlowRunner

# SGLang's memory-saver tag of the KV cache (sglang.srt.constants.GPU_MEMORY_TYPE_KV_CACHE).
KV_CACHE_TAG = "kv_cache"


def paged_kv_view(buffer: torch.Tensor, page_size: int) -> torch.Tensor:
    """One layer's K or V buffer of SGLang as ``[num_pages, kv_heads, page_size, head_dim]`` (a view).

    buffer: token-major ``[slots, kv_heads, head_dim]`` (SGLang's default NHD layout; trailing slots
    that do not fill a page are left out) or page-major ``[pages, kv_heads, page_size, head_dim]``
    (``SGLANG_USE_HND_KVCACHE``).
    """
    if buffer.dim() == 4:
        if buffer.shape[2] != page_size:
            raise ValueError(f"page-major KV buffer {tuple(buffer.shape)} has page size {buffer.shape[2]}, "
                             f"not {page_size}")
        return buffer
    if buffer.dim() != 3:
        raise ValueError(
            f"KV buffer must be [slots, kv_heads, head_dim] or [pages, kv_heads, page_size, head_dim], "
            f"got {tuple(buffer.shape)}"
        )
    slots, kv_heads, head_dim = buffer.shape
    pages = slots // page_size
    return buffer[: pages * page_size].view(pages, page_size, kv_heads, head_dim).transpose(1, 2)


def page_table_from_req_to_token(
    req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor, page_size: int
) -> torch.Tensor:
    """Physical page ids of each request, from SGLang's slot map (device ops only, graph-capturable).

    req_to_token: ``[rows, max_context_len]`` int32 slots; req_pool_indices: ``[batch]`` rows of the
    batch's requests; seq_lens: ``[batch]`` tokens per request. Returns ``[batch, ceil(max_context_len /
    page_size)]`` int32, ``-1`` past each request's last page.
    """
    first_slots = req_to_token[:, ::page_size][req_pool_indices.long()]
    pages = (first_slots // page_size).to(torch.int32)
    num_pages = (seq_lens.to(torch.int32) + page_size - 1) // page_size
    column = torch.arange(pages.shape[1], device=pages.device, dtype=torch.int32)
    return torch.where(column[None, :] < num_pages[:, None], pages, torch.full_like(pages, -1))


class PageState:
    """The flow's per-page state of every sparse layer, next to an SGLang KV pool.

    Parameters
    ----------
    runner: the ``FlowRunner`` whose flow declares the state (``create_cache``).
    kv_pool: SGLang's ``MHATokenToKVPool`` (``get_key_buffer``, ``get_value_buffer``, ``dtype``,
        ``device``, ``memory_saver_adapter``).
    layer_ids: layers that keep state (the sparse layers); others read K/V only.
    """

    def __init__(self, runner: FlowRunner, kv_pool, layer_ids):
        self.runner = runner
        self.kv_pool = kv_pool
        self.page_size = runner.config.page_size
        self.layer_ids = tuple(layer_ids)
        first = self.layer_ids[0] if self.layer_ids else kv_pool.start_layer
        self.num_pages = paged_kv_view(kv_pool.get_key_buffer(first), self.page_size).shape[0]
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        if runner.state_shapes:
            with kv_pool.memory_saver_adapter.region(KV_CACHE_TAG):
                self.state = {
                    layer_id: runner.allocate_state(self.num_pages, dtype=kv_pool.dtype, device=kv_pool.device)
                    for layer_id in self.layer_ids
                }

    def cache(self, layer_id: int) -> dict[str, torch.Tensor]:
        """``{"k", "v", **state}`` of one layer, each ``[num_pages, kv_heads, rows, head_dim]``."""
        return {
            "k": paged_kv_view(self.kv_pool.get_key_buffer(layer_id), self.page_size),
            "v": paged_kv_view(self.kv_pool.get_value_buffer(layer_id), self.page_size),
            **self.state.get(layer_id, {}),
        }

    def update(self, layer_id: int, loc: torch.Tensor) -> None:
        """Refresh the state of the pages touched by ``loc`` (``[num_tokens]`` slots already written)."""
        if layer_id in self.state:
            self.runner.update_state(self.cache(layer_id), loc)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.state.values() for t in layer.values())

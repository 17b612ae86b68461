"""What the ``vortex`` backend refuses at server start, checked on SGLang's ``ServerArgs`` (or the dict of
them our engine passes) and on the page-table width.

The flow keeps per-page state (e.g. key centroids) that the backend refreshes after every K/V write it
sees, from ``forward_batch.out_cache_loc``. Features that put K/V into the pool by another road leave
that state stale, and page selection would then run on it silently:

- HiCache (``--enable-hierarchical-cache``) copies pages back from host memory or storage;
- PD disaggregation (``--disaggregation-mode prefill|decode``) receives pages from another server;
- hierarchical sparse attention (``--enable-hisparse``) swaps pages between device and host.

SGLang's Ray launcher (``--use-ray``) builds scheduler actors that never call ``load_plugins()``, so
the backend would be unknown there; our Ray trainer runs ``sglang.Engine`` inside its own rollout actors
instead (``rollout.engine=sglang``).

The page table is ``[batch, ceil(width / page_size)]`` with ``width`` = ``req_to_token``'s row
(``context_len + 4`` in SGLang 0.5.23), whatever the batch's lengths, and the fused block-sparse indexer
handles at most ``vortex_rl.kernels.indexer.MAX_PAGES`` pages per row.
"""

from __future__ import annotations

from typing import Any, Callable

from vortex_rl.kernels.indexer import MAX_PAGES
from vortex_rl.sparse.backend import FUSED_KERNELS

# SGLang sizes req_to_token rows context_len + 4 (kv_cache_configurator's extra_max_context_len; the
# speculative draft tokens it adds too are moot: speculative decoding is refused).
REQ_TO_TOKEN_EXTRA = 4

_REFUSED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("enable_hierarchical_cache", bool,
     "HiCache (--enable-hierarchical-cache) loads KV pages from host memory without the backend seeing "
     "the writes, so the flow's per-page state would go stale"),
    ("disaggregation_mode", lambda mode: mode not in (None, "null"),
     "PD disaggregation (--disaggregation-mode) receives KV pages from another server without the backend "
     "seeing the writes, so the flow's per-page state would go stale"),
    ("enable_hisparse", bool,
     "hierarchical sparse attention (--enable-hisparse) swaps KV pages between device and host behind the "
     "backend, so the flow's per-page state would go stale"),
    ("use_ray", bool,
     "SGLang's Ray launcher (--use-ray) starts scheduler actors that never load plugins, so 'vortex' is "
     "unknown there; run sglang.Engine inside your own Ray actor (vortex-rl's rollout.engine=sglang does)"),
)


def refused_server_modes(get: Callable[[str], Any]) -> list[str]:
    """Why each enabled SGLang feature is refused with ``--attention-backend vortex``.

    get: reads a ``ServerArgs`` field by name (``lambda k: getattr(server_args, k, None)`` or
    ``dict.get``); fields this SGLang lacks read as ``None``.
    """
    return [reason for name, enabled, reason in _REFUSED if enabled(get(name))]


def page_table_pages(req_to_token_width: int, page_size: int) -> int:
    """Width of the decode page table: ``ceil(req_to_token_width / page_size)``."""
    return -(-req_to_token_width // page_size)


def uses_fused_indexer(flow: str) -> bool:
    return flow in FUSED_KERNELS and "indexer" in FUSED_KERNELS.get(flow)


def check_page_table_width(req_to_token_width: int, page_size: int, flow: str) -> None:
    """Refuse a context whose page-table row exceeds the fused indexer's ``MAX_PAGES``."""
    pages = page_table_pages(req_to_token_width, page_size)
    if uses_fused_indexer(flow) and pages > MAX_PAGES:
        longest = MAX_PAGES * page_size - REQ_TO_TOKEN_EXTRA
        raise ValueError(
            f"--attention-backend vortex: a context of {req_to_token_width - REQ_TO_TOKEN_EXTRA} tokens gives "
            f"{pages} pages of {page_size} per page-table row, over the {flow} indexer's limit of {MAX_PAGES}; "
            f"start SGLang with --context-length {longest} or less (or a larger --page-size)"
        )


def graphs_enabled(get: Callable[[str], Any]) -> bool:
    """Whether SGLang will capture decode CUDA graphs."""
    return not (get("disable_cuda_graph") or get("disable_decode_cuda_graph"))


def check_server_args(get: Callable[[str], Any], *, dense_backend: str) -> None:
    """Raise one ``ValueError`` listing every refused feature (see the module docstring).

    dense_backend: ``VortexBackendConfig.dense_backend``; SGLang's ``torch_native`` has no CUDA-graph
    support (``init_cuda_graph_state`` raises), so it is refused unless decode CUDA graphs are off.
    """
    problems = refused_server_modes(get)
    if dense_backend == "torch_native" and graphs_enabled(get):
        problems.append("dense_backend='torch_native' with decode CUDA graphs: SGLang's torch_native backend "
                        "has no CUDA-graph support and fails at graph capture; use triton, fa3 or flashinfer, "
                        "or --disable-cuda-graph")
    if problems:
        raise ValueError("--attention-backend vortex does not support: " + "; ".join(problems))

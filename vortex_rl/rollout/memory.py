"""How many KV pages fit: an explicit count, a memory budget, or what the GPU has left."""

from __future__ import annotations

from typing import Callable

import torch

from vortex_rl.rollout.config import EngineConfig

GIB = 1 << 30
CPU_DEFAULT_GB = 1.0
SAMPLER_BYTES_PER_LOGIT = 48  # logits, scaled copy, log-probs, float64 CDF, sort values and indices


def decide_num_pages(config: EngineConfig, *, page_bytes: int, max_pages_per_seq: int, vocab_size: int,
                     device: torch.device, warmup_prefill: Callable[[], None]) -> int:
    """Pages for the cache under ``EngineConfig``: ``num_pages`` if given, else ``kv_cache_memory_gb``,
    else on CUDA ``gpu_memory_utilization`` of the device minus what the engine already holds and its
    peak activation memory, else 1 GiB on CPU. Budgets are capped at what ``max_num_seqs`` full-length
    sequences can use.

    page_bytes: one page across all layers (K, V and the flow's state). warmup_prefill: runs the
    largest prefill the engine will run (a full token budget), so its peak activation memory is measured.
    """
    if config.num_pages is not None:
        return config.num_pages
    if config.kv_cache_memory_gb is not None:
        budget = config.kv_cache_memory_gb * GIB
    elif device.type == "cuda":
        budget = _cuda_budget(config, device, vocab_size, warmup_prefill)
    else:
        budget = CPU_DEFAULT_GB * GIB
    num_pages = min(int(budget // page_bytes), config.max_num_seqs * max_pages_per_seq)
    if num_pages < 1:
        raise ValueError(
            f"the KV-cache budget ({budget / GIB:.3f} GiB) holds no page of {page_bytes} bytes; raise "
            "kv_cache_memory_gb or gpu_memory_utilization, or set num_pages"
        )
    return num_pages


def _cuda_budget(config: EngineConfig, device: torch.device, vocab_size: int,
                 warmup_prefill: Callable[[], None]) -> float:
    """Bytes left for the cache after a warm-up prefill of a full token budget measured the peak."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    warmup_prefill()
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    peak = torch.cuda.max_memory_allocated(device)
    current = torch.cuda.memory_allocated(device)
    sampler = config.max_num_seqs * vocab_size * SAMPLER_BYTES_PER_LOGIT
    return total * config.gpu_memory_utilization - used - (peak - current) - sampler

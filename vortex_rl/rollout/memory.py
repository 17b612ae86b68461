"""How many KV pages fit: an explicit count, a memory budget, or what the GPU has left."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vortex_rl.rollout.model_runner import ModelRunner

GIB = 1 << 30
CPU_DEFAULT_GB = 1.0
SAMPLER_BYTES_PER_LOGIT = 48  # logits, scaled copy, log-probs, float64 CDF, sort values and indices


def decide_num_pages(runner: "ModelRunner") -> int:
    """Pages for the cache under ``EngineConfig``: ``num_pages`` if given, else ``kv_cache_memory_gb``,
    else on CUDA ``gpu_memory_utilization`` of the device minus what the engine already holds and its
    peak activation memory, else 1 GiB on CPU. Budgets are capped at what ``max_num_seqs`` full-length
    sequences can use."""
    config = runner.config
    if config.num_pages is not None:
        return config.num_pages
    page_bytes = runner.page_bytes()
    if config.kv_cache_memory_gb is not None:
        budget = config.kv_cache_memory_gb * GIB
    elif runner.device.type == "cuda":
        budget = _cuda_budget(runner)
    else:
        budget = CPU_DEFAULT_GB * GIB
    num_pages = min(int(budget // page_bytes), config.max_num_seqs * runner.max_pages_per_seq)
    if num_pages < 1:
        raise ValueError(
            f"the KV-cache budget ({budget / GIB:.3f} GiB) holds no page of {page_bytes} bytes; raise "
            "kv_cache_memory_gb or gpu_memory_utilization, or set num_pages"
        )
    return num_pages


def _cuda_budget(runner: "ModelRunner") -> float:
    """Bytes left for the cache after a warm-up prefill of a full token budget measured the peak."""
    torch.cuda.synchronize(runner.device)
    torch.cuda.reset_peak_memory_stats(runner.device)
    _warmup_prefill(runner)
    torch.cuda.synchronize(runner.device)
    free, total = torch.cuda.mem_get_info(runner.device)
    used = total - free
    peak = torch.cuda.max_memory_allocated(runner.device)
    current = torch.cuda.memory_allocated(runner.device)
    sampler = runner.config.max_num_seqs * runner.arch.vocab_size * SAMPLER_BYTES_PER_LOGIT
    return total * runner.config.gpu_memory_utilization - used - (peak - current) - sampler


def _warmup_prefill(runner: "ModelRunner") -> None:
    """One prefill of ``max_num_batched_tokens`` tokens into a temporary cache, then free it."""
    from vortex_rl.rollout.page_manager import PageManager, pages_for
    from vortex_rl.rollout.sampling_params import SamplingParams
    from vortex_rl.rollout.scheduler import ScheduledBatch
    from vortex_rl.rollout.sequence import Sequence

    tokens = min(runner.config.max_num_batched_tokens, runner.max_model_len)
    pages = PageManager(pages_for(tokens, runner.page_size), runner.page_size)
    try:
        runner.allocate_kv_cache(pages.num_pages, capture_graphs=False)
        seq = Sequence(0, [0] * tokens, SamplingParams(), seed=0, prompt_index=0, sample_index=0,
                       max_pages=runner.max_pages_per_seq)
        pages.prepare_write(seq, tokens)
        runner.run(ScheduledBatch(True, [seq], [tokens]))
    finally:
        runner.free_kv_cache()

"""`SGLangOptions` and the translations between our rollout types and SGLang's.

``EngineConfig`` + ``SGLangOptions`` -> ``sglang.Engine`` arguments; ``SamplingParams`` -> SGLang's
sampling dict; an SGLang result -> ``Completion``; named tensors -> weight-update buckets. Pure
functions: nothing here imports SGLang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from vortex_rl.devices import TORCH_DTYPES
from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.sampling_params import SamplingParams
from vortex_rl.rollout.sequence import Completion
from vortex_rl.rollout.sglang.compat import BACKEND_NAME
from vortex_rl.rollout.sglang.config import DENSE_BACKENDS, VortexBackendConfig
from vortex_rl.rollout.sglang.server_checks import REQ_TO_TOKEN_EXTRA, check_page_table_width, check_server_args
from vortex_rl.sparse import get_flow

# What sleep() releases. The KV cache (the flow's page state lives in its region) is always freed. The
# CUDA graphs' memory is allocated in the "cuda_graph" region only when SGLANG_MEMORY_SAVER_CUDA_GRAPH=1
# is set for SGLang's processes; otherwise releasing the tag frees nothing. SGLang 0.5.23 refuses that
# variable for the breakable (prefill) CUDA graph (NotImplementedError at capture): see
# check_graph_memory_saver.
SLEEP_TAGS = ("kv_cache", "cuda_graph")
GRAPH_MEMORY_SAVER_ENV = "SGLANG_MEMORY_SAVER_CUDA_GRAPH"


def graph_memory_saver_on(environ=os.environ) -> bool:
    """Whether SGLang will allocate CUDA graphs where ``release_memory_occupation`` can free them."""
    return environ.get(GRAPH_MEMORY_SAVER_ENV, "").lower() in ("1", "true", "yes", "on")


def check_graph_memory_saver(args: dict[str, Any], environ=os.environ) -> None:
    """Refuse ``SGLANG_MEMORY_SAVER_CUDA_GRAPH`` with a prefill CUDA graph that may be breakable: SGLang's
    breakable graph backend raises under it. ``cuda_graph_backend_prefill`` "full" or "disabled" is fine."""
    if not (args.get("enable_memory_saver") and graph_memory_saver_on(environ)):
        return
    if args.get("disable_cuda_graph") or args.get("cuda_graph_backend_prefill") in ("full", "disabled"):
        return
    raise ValueError(
        f"{GRAPH_MEMORY_SAVER_ENV}=1 (so that sleep() also frees CUDA graphs) makes SGLang's breakable prefill "
        "CUDA graph raise NotImplementedError at capture: add SGLangOptions(server_args="
        "{'cuda_graph_backend_prefill': 'disabled'}) or unset the variable (sleep() then frees the KV cache only)"
    )
STATIC_SHARE = 0.85


@dataclass
class SGLangOptions:
    """What only the SGLang engine needs besides ``EngineConfig``.

    Attributes
    ----------
    tp_size: tensor-parallel GPUs per engine.
    dense_backend: SGLang backend for prefill and dense decode (``VortexBackendConfig.dense_backend``).
    mem_fraction_static: SGLang's fraction of GPU memory for weights and KV cache; ``None`` takes
        ``STATIC_SHARE`` of ``EngineConfig.gpu_memory_utilization`` (the rest of that budget is left to
        activations and CUDA graphs).
    enable_memory_saver: allocate through torch_memory_saver so ``sleep()`` / ``wake()`` work.
    sleep_releases_weights: ``sleep()`` also frees the weights (backed up in CPU memory).
    weight_bucket_mb: ``update_weights`` sends tensors in buckets of about this many MiB.
    deterministic: SGLang's deterministic inference (``flow="dense"`` only: SGLang allows it for its own
        backends); each sample is then seeded from ``SamplingParams.seed``.
    tokenizer_path: tokenizer for text prompts and ``Completion.text``; ``None`` uses the model's.
    server_args: further ``sglang.Engine`` arguments, passed as they are (e.g. ``{"disable_radix_cache": True}``).
    """

    tp_size: int = 1
    dense_backend: str = "auto"
    mem_fraction_static: float | None = None
    enable_memory_saver: bool = True
    sleep_releases_weights: bool = False
    weight_bucket_mb: int = 512
    deterministic: bool = False
    tokenizer_path: str | None = None
    server_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.tp_size, int) or self.tp_size < 1:
            raise ValueError(f"tp_size={self.tp_size!r} must be a positive int")
        if self.dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend={self.dense_backend!r} is not one of {DENSE_BACKENDS}")
        if self.mem_fraction_static is not None and not 0 < self.mem_fraction_static < 1:
            raise ValueError(f"mem_fraction_static={self.mem_fraction_static!r} must be in (0, 1) or None")
        if not isinstance(self.weight_bucket_mb, int) or self.weight_bucket_mb < 1:
            raise ValueError(f"weight_bucket_mb={self.weight_bucket_mb!r} must be a positive int (MiB)")
        if self.sleep_releases_weights and not self.enable_memory_saver:
            raise ValueError("sleep_releases_weights=True needs enable_memory_saver=True")


def server_args_for(model_path: str, config: EngineConfig, options: SGLangOptions, hf_config=None
                    ) -> dict[str, Any]:
    """``sglang.Engine`` keyword arguments (``ServerArgs`` fields) for our config.

    hf_config: the model's ``transformers`` config, needed to turn ``config.kv_cache_memory_gb`` into a
    token count (``kv_tokens_for_memory``) and to check the default context's page-table width.
    Raises ``ValueError`` for what the vortex backend refuses (``server_checks``).
    """
    _check_supported(config, options)
    dtype = "bfloat16" if config.dtype == "auto" else config.dtype
    args: dict[str, Any] = {
        "model_path": model_path,
        "tp_size": options.tp_size,
        "page_size": config.page_size,
        "max_running_requests": config.max_num_seqs,
        "chunked_prefill_size": config.max_num_batched_tokens,
        "dtype": dtype,
        "random_seed": config.seed,
        "mem_fraction_static": options.mem_fraction_static or config.gpu_memory_utilization * STATIC_SHARE,
        "enable_memory_saver": options.enable_memory_saver,
        "enable_weights_cpu_backup": options.sleep_releases_weights,
        "enable_deterministic_inference": options.deterministic,
    }
    if config.device.startswith("cuda:"):
        args["base_gpu_id"] = int(config.device.split(":", 1)[1])
    if config.max_model_len is not None:
        args["context_length"] = config.max_model_len
    if config.num_pages is not None:
        args["max_total_tokens"] = config.num_pages * config.page_size
    elif config.kv_cache_memory_gb is not None:
        if hf_config is None:
            raise ValueError("kv_cache_memory_gb needs the model's hf_config to size SGLang's KV cache in tokens")
        dtype_bytes = TORCH_DTYPES[dtype].itemsize
        args["max_total_tokens"] = kv_tokens_for_memory(hf_config, config, options.tp_size, dtype_bytes)
    if config.enforce_eager:
        args["disable_decode_cuda_graph"] = True
    elif config.cuda_graph_batch_sizes is not None:
        args["cuda_graph_bs_decode"] = list(config.graph_batch_sizes())
    args.update(_attention_args(config, options))
    clash = sorted(set(options.server_args) & (set(args) - {"json_model_override_args"}))
    if clash:
        raise ValueError(f"SGLangOptions.server_args sets {clash}, which EngineConfig/SGLangOptions already set")
    merged = {**options.server_args, **args}
    check_graph_memory_saver(merged)
    if merged.get("attention_backend") == BACKEND_NAME:
        check_server_args(merged.get, dense_backend=options.dense_backend)
        # SGLang's default context is the model's max_position_embeddings; the scheduler checks the
        # exact req_to_token width again.
        context = merged.get("context_length") or getattr(hf_config, "max_position_embeddings", None)
        if context is not None:
            check_page_table_width(int(context) + REQ_TO_TOKEN_EXTRA, config.page_size, config.flow)
    return merged


def _check_supported(config: EngineConfig, options: SGLangOptions) -> None:
    if config.device == "cpu":
        raise ValueError("rollout.engine=sglang runs on CUDA; device='cpu' needs rollout.engine=vortex")
    if options.deterministic and config.flow != "dense":
        raise ValueError(f"SGLang's deterministic inference accepts only its own attention backends, not "
                         f"vortex (flow={config.flow!r}); use flow='dense' or deterministic=False")


def _attention_args(config: EngineConfig, options: SGLangOptions) -> dict[str, Any]:
    if config.flow == "dense":
        return {} if options.dense_backend == "auto" else {"attention_backend": options.dense_backend}
    vortex = VortexBackendConfig(flow=config.flow, sparse=config.sparse, dense_backend=options.dense_backend,
                                 kernel_backend=config.kernel_backend)
    existing = options.server_args.get("json_model_override_args")
    return {"attention_backend": BACKEND_NAME, "json_model_override_args": vortex.merge_into_override_args(existing)}


def kv_tokens_for_memory(hf_config, config: EngineConfig, tp_size: int, dtype_bytes: int) -> int:
    """Tokens of KV cache (whole pages) that fit ``config.kv_cache_memory_gb`` GiB per GPU, counting K, V
    and the flow's per-page state of the sparse layers."""
    layers = hf_config.num_hidden_layers
    q_heads = hf_config.num_attention_heads
    kv_heads = max(1, (getattr(hf_config, "num_key_value_heads", None) or q_heads) // tp_size)
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // q_heads
    row = kv_heads * head_dim * dtype_bytes  # one token of K (or V) in one layer
    state_rows = sum(r for r, _ in get_flow(config.flow).cache_shapes(config.page_size, head_dim).values())
    sparse_layers = layers - len({i for i in config.sparse.dense_layers if i < layers})
    page_bytes = layers * 2 * config.page_size * row + sparse_layers * state_rows * row
    pages = int(config.kv_cache_memory_gb * 2**30 // page_bytes)
    if pages < 1:
        raise ValueError(f"kv_cache_memory_gb={config.kv_cache_memory_gb} holds no page of {page_bytes} bytes")
    return pages * config.page_size


def sglang_sampling_params(params: SamplingParams, seed: int | None, eos_token_ids: Iterable[int] = ()
                           ) -> dict[str, Any]:
    """SGLang's per-request sampling dict for one sample.

    seed: only under deterministic inference (SGLang ignores it otherwise). eos_token_ids: the EOS ids our
    engine stops on; they join ``stop_token_ids`` so SGLang stops on the same set. With ``ignore_eos``
    SGLang ignores stop tokens too (ours still stops on ``params.stop``).
    """
    stop = set(params.stop) | (set() if params.ignore_eos else set(eos_token_ids))
    out = {
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k if params.top_k > 0 else -1,
        "max_new_tokens": params.max_new_tokens,
        "stop_token_ids": sorted(stop),
        "ignore_eos": params.ignore_eos,
        "skip_special_tokens": True,
    }
    if seed is not None:
        out["sampling_seed"] = seed
    return out


def completion_from_output(output: dict[str, Any], params: SamplingParams, text: str) -> Completion:
    """Our ``Completion`` from one result of ``sglang.Engine.generate(..., return_logprob=True)``."""
    meta = output["meta_info"]
    reason = (meta.get("finish_reason") or {}).get("type")
    if reason not in ("stop", "length"):
        raise RuntimeError(f"SGLang request ended with finish_reason={meta.get('finish_reason')!r}")
    token_ids = [int(t) for t in output["output_ids"]]
    logprobs = meta["output_token_logprobs"]
    if [int(entry[1]) for entry in logprobs] != token_ids:
        raise RuntimeError("SGLang returned log-probs for other tokens than output_ids")
    top = None
    if params.logprobs:
        top = [{int(tid): float(lp) for lp, tid, *_ in step[: params.logprobs]} for step in meta["output_top_logprobs"]]
    return Completion(token_ids=token_ids, text=text, logprobs=[float(entry[0]) for entry in logprobs],
                      top_logprobs=top, finish_reason=reason)

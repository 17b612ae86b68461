"""verl's rollout config and per-request sampling dicts, translated into ``EngineConfig`` and
``SamplingParams`` (no verl import: it reads attributes of verl's ``RolloutConfig``).

Our options sit under ``actor_rollout_ref.rollout.engine_kwargs.vortex`` (verl's place for per-backend
engine options); the rest come from verl's own rollout keys:

============================== ===============================================================
verl key (``rollout.``)        ``EngineConfig`` / ``SamplingParams``
============================== ===============================================================
``max_num_seqs``               ``max_num_seqs``
``max_num_batched_tokens``     ``max_num_batched_tokens``
``max_model_len``              ``max_model_len`` (default ``prompt_length + response_length``)
``gpu_memory_utilization``     ``gpu_memory_utilization``
``dtype``                      ``dtype``
``enforce_eager``              ``enforce_eager``
``seed``                       ``seed``
``response_length``            ``SamplingParams.max_new_tokens`` (capped by the room left)
``temperature/top_p/top_k``    the same ``SamplingParams`` fields (per request, from verl)
``calculate_log_probs``        ``TokenOutput.log_probs`` returned
``ignore_eos``                 ``SamplingParams.ignore_eos``
``engine_kwargs.vortex.*``     ``flow``, ``sparse`` (``SparseConfig`` fields: ``page_size``,
                               ``budget_pages``, ...), ``num_pages``, ``kv_cache_memory_gb``,
                               ``swap_space_gb``, ``kernel_backend``, ``device``
============================== ===============================================================
"""

from __future__ import annotations

from typing import Any, Mapping

from vortex_rl.rollout import EngineConfig, SamplingParams
from vortex_rl.sparse import SparseConfig

ENGINE_KEYS = ("flow", "sparse", "num_pages", "kv_cache_memory_gb", "swap_space_gb", "kernel_backend", "device")
# sampling keys verl's agent loops send that the engine honours; anything else is refused by name
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "max_tokens",
                 "max_new_tokens", "seed", "stop_token_ids", "ignore_eos"}


def vortex_kwargs(rollout_config) -> dict[str, Any]:
    """``rollout.engine_kwargs.vortex`` as a plain dict (``{}`` when absent); unknown keys raise."""
    engine_kwargs = getattr(rollout_config, "engine_kwargs", None) or {}
    kwargs = dict(engine_kwargs.get("vortex") or {})
    unknown = sorted(set(kwargs) - set(ENGINE_KEYS))
    if unknown:
        raise ValueError(f"rollout.engine_kwargs.vortex has unknown keys {unknown}; accepted: {list(ENGINE_KEYS)}")
    return kwargs


def engine_config(rollout_config) -> EngineConfig:
    """The ``EngineConfig`` of a verl ``RolloutConfig`` (see the module docstring for the mapping)."""
    kw = vortex_kwargs(rollout_config)
    sparse = kw.pop("sparse", None) or {}
    if not isinstance(sparse, Mapping):
        raise ValueError(f"rollout.engine_kwargs.vortex.sparse={sparse!r} must be a mapping of SparseConfig fields")
    sparse = {k: tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v) if isinstance(v, (list, tuple)) else v
              for k, v in dict(sparse).items()}
    max_model_len = rollout_config.max_model_len or rollout_config.prompt_length + rollout_config.response_length
    return EngineConfig(
        sparse=SparseConfig(**sparse), max_num_seqs=int(rollout_config.max_num_seqs),
        max_num_batched_tokens=int(rollout_config.max_num_batched_tokens), max_model_len=int(max_model_len),
        gpu_memory_utilization=float(rollout_config.gpu_memory_utilization), dtype=str(rollout_config.dtype),
        enforce_eager=bool(rollout_config.enforce_eager), seed=int(rollout_config.seed), **kw)


def max_new_tokens(rollout_config, prompt_len: int, max_model_len: int, requested: int | None) -> int:
    """Tokens a request may generate: ``response_length``, the room left in ``prompt_length +
    response_length`` and in ``max_model_len``, and what the request asked for (multi-turn loops do)."""
    room = min(rollout_config.response_length,
               rollout_config.prompt_length + rollout_config.response_length - prompt_len, max_model_len - prompt_len)
    return max(0, room if requested is None else min(room, int(requested)))


def sampling_params(params: Mapping[str, Any], *, max_new: int, ignore_eos: bool) -> tuple[SamplingParams, bool]:
    """``SamplingParams`` of one verl request dict, and whether it asked for log-probs.

    ``repetition_penalty`` other than 1 is refused (the engine samples from the model's distribution,
    which the trainer's log-probs must match).
    """
    unknown = sorted(set(params) - SAMPLING_KEYS)
    if unknown:
        raise ValueError(f"sampling params {unknown} are not supported by the vortex rollout; accepted: "
                         f"{sorted(SAMPLING_KEYS)}")
    if float(params.get("repetition_penalty", 1.0)) != 1.0:
        raise ValueError(f"repetition_penalty={params['repetition_penalty']!r}: the vortex rollout supports only 1.0")
    top_k = int(params.get("top_k", -1))
    sp = SamplingParams(temperature=float(params.get("temperature", 1.0)), top_p=float(params.get("top_p", 1.0)),
                        top_k=-1 if top_k <= 0 else top_k, max_new_tokens=max_new,
                        stop=tuple(params.get("stop_token_ids") or ()),
                        ignore_eos=bool(params.get("ignore_eos", ignore_eos)), seed=params.get("seed"))
    return sp, bool(params.get("logprobs", False))

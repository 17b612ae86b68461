"""The weight checksum of our engines (the float64 sum of every weight element) for weights SGLang serves.

The weights live in SGLang's scheduler processes. The plugin adds one action to SGLang's weight checker
(``check_weights(action=PARAM_SUMS_ACTION)``, through an ``AROUND`` hook of the plugin API): every
rank answers the float64 sum of each of its parameters in the checker's usual payload. The driver adds
them up with :func:`combine_param_sums`, which undoes tensor parallelism: a parameter with the same sum
on every rank is replicated and counted once; other parameters are shards and are added.

Fused parameters (qkv, gate_up) hold the same elements as the checkpoint's, and SGLang's vocabulary
padding is zero, so the result equals ``vortex_rl.rollout.weight_checksum`` of the same weights up to
summation order.
"""

from __future__ import annotations

import torch

PARAM_SUMS_ACTION = "vortex_param_sums"
HOOK_TARGET = "sglang.srt.utils.weight_checker.WeightChecker.handle"


def tensor_sum(t: torch.Tensor, *, chunk: int = 1 << 24) -> float:
    """Sum of every element in float64, ``chunk`` elements at a time (no float64 copy of a whole large
    tensor)."""
    flat = t.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for part in flat.split(chunk):
        total += part.double().sum()
    return float(total)


def param_sums_hook(original, checker, action, *args, **kwargs):
    """``AROUND`` hook of ``WeightChecker.handle``: answers ``PARAM_SUMS_ACTION``, passes the rest on."""
    if action != PARAM_SUMS_ACTION:
        return original(checker, action, *args, **kwargs)
    from sglang.srt.utils.weight_checker import ChecksumInfo, overall_checksum

    sums = {name: repr(tensor_sum(param)) for name, param in checker._get_model().named_parameters()}
    info = ChecksumInfo(checksums=sums, per_gpu_checksum=overall_checksum(sums),
                        parallelism_info=checker._parallelism_info(role=kwargs.get("role", "target")))
    return info.model_dump()


def combine_param_sums(ranks: list[dict]) -> float:
    """The engine's weight sum from the per-rank answers SGLang's ``check_weights`` returns.

    ranks: one dict per rank, ``{"checksums": {name: repr(float)}, "parallelism_info": [{"dp_rank": ...,
    ...}, ...]}``. Only the first data-parallel replica counts (the others hold the same weights).
    """
    if not ranks:
        raise ValueError("SGLang returned no per-rank weight sums")
    replica = [r for r in ranks if _dp_rank(r) == min(_dp_rank(x) for x in ranks)]
    names = replica[0]["checksums"].keys()
    total = 0.0
    for name in names:
        values = [float(r["checksums"][name]) for r in replica]
        total += values[0] if all(v == values[0] for v in values) else sum(values)
    return total


def _dp_rank(rank: dict) -> int:
    info = rank.get("parallelism_info") or [{}]
    return int((info[0] if isinstance(info, list) else info).get("dp_rank", 0))

"""`load_weights`: named checkpoint tensors into the engine's model, for loading and syncing alike.

Every checkpoint tensor goes through its parameter's ``weight_loader`` (``layers.linear``), after
``packed_modules_mapping`` has mapped Hugging Face names to fused parameters. Loading a checkpoint and
syncing a trainer's weights are the same code.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from vortex_rl.rollout.weights import ROTARY_BUFFER_SUFFIXES


def parameter_for(model: nn.Module, params: dict[str, nn.Parameter], name: str):
    """``(param_name, param, shard_id)`` for a checkpoint name, ``None`` for names to skip."""
    if name.endswith(ROTARY_BUFFER_SUFFIXES) or name in model.tied_weight_names:
        return None
    for key, (packed, shard_id) in model.packed_modules_mapping.items():
        if f".{key}." in name:
            target = name.replace(f".{key}.", f".{packed}.")
            if target in params:
                return target, params[target], shard_id
    if name in params:
        return name, params[name], None
    raise KeyError(f"unknown weight {name!r}: no parameter of the {model.arch.model_type} model takes it")


def expected_shards(model: nn.Module) -> set[tuple[str, object]]:
    """Every ``(param_name, shard_id)`` a complete checkpoint must fill."""
    owners = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = getattr(module, "shard_ids", (None,))
    return {(name, shard) for name, p in model.named_parameters() for shard in owners[id(p)]}


def load_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], *, strict: bool, atomic: bool) -> int:
    """Copy named tensors into ``model``; returns how many were loaded.

    strict: every parameter (every shard of a fused one) must be given.
    atomic: check every name and shape before copying anything (the tensors are held meanwhile); a
        failure raises and leaves the model unchanged. Without it tensors stream in one by one.
    """
    params = dict(model.named_parameters())
    loaded: set[tuple[str, object]] = set()
    pending = []
    for name, tensor in weights:
        target = parameter_for(model, params, name)
        if target is None:
            continue
        param_name, param, shard_id = target
        try:
            param.weight_loader(param, tensor, shard_id, check_only=atomic)
        except ValueError as err:
            raise ValueError(f"weight {name!r} -> {param_name}: {err}") from None
        loaded.add((param_name, shard_id))
        if atomic:
            pending.append((param, tensor, shard_id))
    if strict:
        missing = sorted(f"{n}[{s}]" if s is not None else n for n, s in expected_shards(model) - loaded)
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} weights: {missing[:8]}")
    for param, tensor, shard_id in pending:
        param.weight_loader(param, tensor, shard_id)
    return len(loaded)

"""Weights in and out of the engine's model: checkpoints, ``transformers`` models, GGUF files, updates.

Every checkpoint tensor goes through its parameter's ``weight_loader`` (``layers.linear``), after
``packed_modules_mapping`` has mapped Hugging Face names to fused parameters. Loading a checkpoint and
syncing a trainer's weights are the same code (``load_weights``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import nn

SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve(model: nn.Module, params: dict[str, nn.Parameter], name: str):
    """``(param_name, param, shard_id)`` for a checkpoint name, ``None`` for names to skip."""
    if name.endswith(SKIPPED_SUFFIXES) or name in model.tied_weight_names:
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
        target = resolve(model, params, name)
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


def iter_safetensors(model_dir: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every ``*.safetensors`` file in ``model_dir``, one at a time."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir!r}; pass a safetensors model directory, "
                                "a .gguf file or a transformers model")
    for path in files:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def eos_token_ids(hf_config, generation_config=None, tokenizer=None) -> set[int]:
    """EOS ids named by the generation config, the model config and the tokenizer (all of them)."""
    found: set[int] = set()
    for source in (generation_config, hf_config, tokenizer):
        ids = getattr(source, "eos_token_id", None) if source is not None else None
        if ids is None:
            continue
        found.update([ids] if isinstance(ids, int) else ids)
    return found


def weight_checksum(named_tensors: Iterable[tuple[str, torch.Tensor]], *, tied_names: Iterable[str] = ()) -> float:
    """Sum of every element of every distinct tensor, in float64.

    Matches ``Engine.state_checksum`` when given the trainer's Hugging Face parameters with the same
    values (fused parameters hold the same elements; ``tied_names`` and tensors already counted through
    another name are skipped, as are rotary buffers).
    """
    skip = set(tied_names)
    seen: set[int] = set()
    total = torch.zeros((), dtype=torch.float64)
    for name, tensor in named_tensors:
        if name in skip or name.endswith(SKIPPED_SUFFIXES):
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen:
            continue
        seen.add(key)
        total += tensor.detach().double().sum().cpu()
    return float(total)


def weight_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
                   ) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of ``(name, tensor)`` of about ``bucket_bytes`` each (a larger tensor goes alone):
    how weight updates travel to an engine without materialising the whole model twice."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


@dataclass
class ModelSource:
    """A model to load: its Hugging Face config, its named weights (an iterable, read once), tokenizer,
    and the ``transformers`` model the weights come from when there is one (GGUF, model objects)."""

    hf_config: Any
    weights: Iterable[tuple[str, torch.Tensor]]
    tokenizer: Any
    eos_token_ids: set[int]
    hf_model: nn.Module | None = None


def open_source(source, *, gguf_file: str | None = None, tokenizer=None) -> ModelSource:
    """Read a safetensors model directory, a ``.gguf`` file (or a directory plus ``gguf_file``), or a
    ``transformers`` model object. ``tokenizer=None`` loads the source's tokenizer when it has one."""
    if isinstance(source, nn.Module):
        return _from_model(source, tokenizer)
    path = os.fspath(source)
    if path.endswith(".gguf"):
        path, gguf_file = os.path.dirname(path) or ".", os.path.basename(path)
    if gguf_file is not None:
        return _from_gguf(path, gguf_file, tokenizer)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model {source!r} is neither a directory nor a .gguf file")
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(path)
    if tokenizer is None and any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    generation_config = None
    if os.path.exists(os.path.join(path, "generation_config.json")):
        from transformers import GenerationConfig

        generation_config = GenerationConfig.from_pretrained(path)
    eos = eos_token_ids(hf_config, generation_config, tokenizer)
    return ModelSource(hf_config, iter_safetensors(path), tokenizer, eos)


def _from_model(model: nn.Module, tokenizer) -> ModelSource:
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no .config; pass a transformers causal-LM model")
    eos = eos_token_ids(config, getattr(model, "generation_config", None), tokenizer)
    weights = ((name, p.detach()) for name, p in model.named_parameters())
    return ModelSource(config, weights, tokenizer, eos, hf_model=model)


def _from_gguf(directory: str, gguf_file: str, tokenizer) -> ModelSource:
    """GGUF goes through ``transformers`` (dequantised to float32), which needs ``gguf``."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError("loading GGUF files needs the 'gguf' package: pip install 'vortex-rl[test]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.exists(os.path.join(directory, gguf_file)):
        raise FileNotFoundError(f"GGUF file {gguf_file!r} not found in {directory!r}")
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    return _from_model(model, tokenizer)

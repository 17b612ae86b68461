"""`ModelSource`: what the engine is built from (config, weights, tokenizer, EOS ids), and `open_source`,
which reads one from a safetensors directory, a GGUF file or a ``transformers`` model object."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import nn

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


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

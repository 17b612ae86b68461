"""Load the actor and its tokenizer: a Hugging Face directory or hub id, a GGUF file, or random weights."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any

import torch

from vortex_rl.devices import torch_dtype
from vortex_rl.trainers.config import ModelConfig

RANDOM_ARCHS = ("qwen3", "llama")


def resolve_path(path: str) -> str:
    """``pkg:<package>/<file>`` -> the file inside that installed package (found without importing it)."""
    if not path.startswith("pkg:"):
        return path
    package, _, relative = path[len("pkg:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model.path={path!r}: package {package!r} is not installed (pip install {package.replace('_', '-')})")
    resolved = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.exists(resolved):
        raise FileNotFoundError(f"model.path={path!r}: {resolved} does not exist")
    return resolved


def autocast(config: ModelConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the actor's forward passes: ``compute_dtype`` (``auto`` = bfloat16 on CUDA)
    over float32 master weights, as verl's FSDP actor does; a no-op when it equals the weights' dtype."""
    compute = torch_dtype(config.compute_dtype, device, auto="bfloat16")
    if compute == torch_dtype(config.dtype, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute)


def pad_token_id(tokenizer: Any) -> int:
    """The id responses are padded with: the tokenizer's pad token, else its EOS token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def load_tokenizer(config: ModelConfig, *, checkpoint_dir: str | None = None) -> Any:
    """The tokenizer: from a checkpoint when resuming, else ``tokenizer_path`` (or ``path``); ``char`` builds one."""
    from transformers import AutoTokenizer

    if checkpoint_dir is not None:
        return AutoTokenizer.from_pretrained(checkpoint_dir)
    source = config.tokenizer_path or config.path
    if source == "char":
        from vortex_rl.data.char_tokenizer import build_char_tokenizer

        return build_char_tokenizer()
    if source.startswith("random:"):
        raise ValueError(f"model.path={config.path!r} has random weights: set model.tokenizer_path (e.g. 'char')")
    source = resolve_path(source)
    if source.endswith(".gguf"):
        return AutoTokenizer.from_pretrained(os.path.dirname(source) or ".", gguf_file=os.path.basename(source))
    return AutoTokenizer.from_pretrained(source)


def load_actor(config: ModelConfig, tokenizer: Any, *, device: torch.device, seed: int,
               checkpoint_dir: str | None = None) -> torch.nn.Module:
    """The policy as a ``transformers`` causal LM on ``device`` in ``config.dtype``.

    ``checkpoint_dir`` (a saved ``model/`` directory) takes precedence over ``config.path``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = torch_dtype(config.dtype, device)
    if not config.path and checkpoint_dir is None:
        raise ValueError("model.path is empty: set it to a model directory, hub id, .gguf file or random:<arch>")
    if checkpoint_dir is None and config.path.startswith("random:"):
        model = _random_model(config, tokenizer, seed)
    else:
        path = checkpoint_dir or resolve_path(config.path)
        kwargs: dict[str, Any] = {}
        if path.endswith(".gguf"):
            path, kwargs["gguf_file"] = os.path.dirname(path) or ".", os.path.basename(path)
        try:
            hf_config = AutoConfig.from_pretrained(path, **kwargs)
            for key, value in config.override_config.items():
                setattr(hf_config, key, value)
            model = AutoModelForCausalLM.from_pretrained(path, config=hf_config, **kwargs)
        except Exception as e:  # a damaged checkpoint surfaces as SafetensorError, OSError, ...: name the path
            if checkpoint_dir is None:
                raise
            raise ValueError(f"checkpoint model {checkpoint_dir} could not be loaded ({type(e).__name__}: {e}); "
                             "resume from another checkpoint (trainer.resume=<path>)") from e
        if "gguf_file" in kwargs:
            _drop_gguf_marker(model)
    model.config.use_cache = False
    return model.to(device=device, dtype=dtype)


def _drop_gguf_marker(model: torch.nn.Module) -> None:
    # transformers dequantises GGUF weights to plain tensors but keeps a quantizer that refuses
    # save_pretrained; the trained model is an ordinary dense model, so drop the marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _random_model(config: ModelConfig, tokenizer: Any, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    arch = config.path[len("random:"):]
    if arch not in RANDOM_ARCHS:
        raise ValueError(f"model.path={config.path!r}: random architectures are {['random:' + a for a in RANDOM_ARCHS]}")
    config_cls = {"qwen3": Qwen3Config, "llama": LlamaConfig}[arch]
    fields = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    fields.update(config.override_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config_cls(**fields))

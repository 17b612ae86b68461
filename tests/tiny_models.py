"""Tiny random Hugging Face causal LMs for the tests: one builder for the engine and the trainer tests.

``tiny_hf_model`` is the plain function; ``tests/conftest.py`` offers it as the session fixture
``make_tiny_hf_model`` (same signature), for tests that prefer a fixture to an import.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

# Engine tests: a vocabulary of 320 ids, and weights spread out enough (``initializer_range``) that greedy
# decoding has no near-ties between the engine and transformers.
ENGINE_SIZES: Mapping[str, Any] = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       head_dim=16, max_position_embeddings=1024, initializer_range=0.1)
# Trainer tests: smaller still, transformers' default initialisation; the vocabulary comes from the tokenizer.
TRAINER_SIZES: Mapping[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=8,
                                        max_position_embeddings=64)
KINDS = ("qwen3", "qwen2", "llama")
_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def tiny_hf_model(kind: str = "qwen3", *, seed: int = 0, sizes: Mapping[str, Any] = ENGINE_SIZES, tokenizer=None,
                  spread_weights: bool = True, **config: Any):
    """A small random ``transformers`` causal LM in eval mode.

    Parameters
    ----------
    kind:
        ``qwen3`` (q/k norm, GQA 4/2, untied), ``qwen2`` (q/k/v bias, tied embeddings, GQA 4/1) or
        ``llama`` (4 layers, tied embeddings, attention and MLP bias, llama3 rope scaling, MHA 4/4).
    seed:
        ``torch.manual_seed`` before the weights are drawn (the global generator is left advanced).
    sizes:
        Config fields every kind shares: ``ENGINE_SIZES`` (default) or ``TRAINER_SIZES``.
    tokenizer:
        When given, ``vocab_size`` and the pad/bos/eos ids come from it and the generation config keeps
        its EOS id. Without one, the generation config has no EOS id, so the engine never stops early.
    spread_weights:
        Draw biases from N(0, 0.1) and norm weights from U(0.5, 1.5) (transformers initialises them to 0
        and 1, which would hide bias and norm bugs). ``False`` keeps transformers' initialisation.
    config:
        Any further config field; it overrides ``sizes`` and the kind's own fields
        (e.g. ``tie_word_embeddings=True``).

    The trainer tests' model is ``tiny_hf_model("qwen3", sizes=TRAINER_SIZES, tokenizer=build_char_tokenizer(),
    spread_weights=False, tie_word_embeddings=True)``.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    if kind == "qwen3":
        config_cls, fields = Qwen3Config, dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    elif kind == "qwen2":
        config_cls, fields = Qwen2Config, dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)
    elif kind == "llama":
        config_cls, fields = LlamaConfig, dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                               tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                               rope_parameters=_LLAMA3_ROPE)
    else:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if tokenizer is not None:
        fields.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_cls(**{**sizes, **fields, **config})).eval()
    if spread_weights:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0, 0.1)
                elif "norm" in name:
                    param.uniform_(0.5, 1.5)
    if tokenizer is None:
        model.generation_config.eos_token_id = None
    return model

"""A tiny random Qwen3 over the character tokenizer, shared by the trainer unit tests."""

from __future__ import annotations

import torch

from vortex_rl.data import build_char_tokenizer

TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=True)


def tiny_model_and_tokenizer(seed: int = 0):
    from transformers import AutoModelForCausalLM, Qwen3Config

    tokenizer = build_char_tokenizer()
    config = Qwen3Config(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2, **TINY_SIZES)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config), tokenizer

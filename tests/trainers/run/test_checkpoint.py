"""Checkpoints: atomic layout, latest pointer, pruning, a model transformers loads, RNG restored."""

import random

import pytest
import torch

from vortex_rl.trainers.run.checkpoint import (
    latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint, set_rng_state,
)
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.learner import LocalLearner
from vortex_rl.trainers.config.dataclass_dicts import from_dict


def test_save_load_and_prune(tmp_path, make_tiny_actor):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = make_tiny_actor()
    learner = LocalLearner(model, from_dict(GRPOConfig, {"model": {"path": "random:qwen3"}}), torch.device("cpu"))
    assert latest_checkpoint(tmp_path) is None
    for step in (2, 4, 6):
        random.seed(step)
        torch.manual_seed(step)
        path = save_checkpoint(tmp_path, step, learner=learner, tokenizer=tokenizer,
                               trainer_state={"sampler": {"epoch": step}}, max_to_keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["global_step_4", "global_step_6"]
    assert latest_checkpoint(tmp_path) == path and not list(path.parent.glob(".tmp-*"))
    expected = (random.random(), torch.rand(3))
    random.seed(0)
    torch.manual_seed(0)
    state, learner_state = load_checkpoint(path)
    assert state["step"] == 6 and state["sampler"] == {"epoch": 6} and set(learner_state) == {"optimizer", "scheduler"}
    set_rng_state(state["rng"])
    assert random.random() == expected[0] and torch.equal(torch.rand(3), expected[1])
    loaded = AutoModelForCausalLM.from_pretrained(path / "model")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert AutoTokenizer.from_pretrained(path / "model")("1+2").input_ids == tokenizer("1+2").input_ids
    (tmp_path / "checkpoints" / "latest").write_text("global_step_99")  # a stale pointer falls back to a scan
    assert latest_checkpoint(tmp_path) == path
    with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
        load_checkpoint(tmp_path)

"""Pre-flight: a device or model source that cannot work fails before anything loads, in one line naming
the key to change, and leaves no run directory behind."""

import pytest
import torch

from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.config.dataclass_dicts import from_dict
from vortex_rl.trainers.run.preflight import PreflightError, check_device, check_model_source, preflight

UNCACHED = "vortex-rl-tests/no-such-model"  # a hub id no cache holds


def config(model=None, **trainer):
    return from_dict(GRPOConfig, {"recipe": "tiny_cpu", "model": model or {"path": "random:qwen3", "tokenizer_path": "char"},
                                  "trainer": {"orchestrator": "local", **trainer}})


def test_a_missing_gpu_names_trainer_device():
    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on every machine
    with pytest.raises(PreflightError, match=rf"trainer.device='{absent}' but this machine has .*use trainer.device=cpu"):
        check_device(config(device=absent))
    check_device(config(device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(PreflightError, match="trainer.device='cuda' but this machine has no CUDA GPU"):
            check_device(config(device="cuda"))


def test_an_uncached_hub_id_offline_names_model_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreflightError, match=rf"model.path='{UNCACHED}' is a hub id that is not in the local hub "
                                             r"cache, and HF_HUB_OFFLINE is set: download it first"):
        check_model_source(from_dict(GRPOConfig, {"model": {"path": UNCACHED}}).model)


def test_an_unreachable_hub_names_model_path_in_one_request(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    with pytest.raises(PreflightError, match=rf"model.tokenizer_path='{UNCACHED}' is not in the local hub cache and "
                                             r"the hub is not reachable \(\w+\)"):
        check_model_source(from_dict(GRPOConfig, {"model": {"path": "random:qwen3", "tokenizer_path": UNCACHED}}).model)


@pytest.mark.parametrize("path, message", [
    ("", "model.path is empty"),
    ("./models/nope", r"model.path='./models/nope': no such file or directory"),
    ("/x/model.gguf", r"model.path='/x/model.gguf': no such file or directory"),
    ("pkg:no_such_package_xyz/model.gguf", "package 'no_such_package_xyz' is not installed"),
    ("random:gpt2", "model.path='random:gpt2': random weights are model.path=random:qwen3 or random:llama"),
    ("random:qwen3", "has random weights: set model.tokenizer_path"),
])
def test_a_missing_local_model_names_model_path(path, message):
    with pytest.raises(PreflightError, match=message):
        check_model_source(from_dict(GRPOConfig, {"model": {"path": path}}).model)


def test_local_sources_pass_and_a_resume_skips_the_model_check(tmp_path):
    (tmp_path / "model").mkdir()
    check_model_source(from_dict(GRPOConfig, {"model": {"path": str(tmp_path / "model")}}).model)
    check_model_source(config().model)
    preflight(config({"path": "./gone"}), resuming=True)  # the checkpoint holds the model


def test_the_entry_point_fails_in_one_line_before_a_directory_exists(tmp_path, monkeypatch):
    pytest.importorskip("hydra")
    from vortex_rl.train import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("VORTEX_DEBUG", raising=False)
    with pytest.raises(SystemExit) as failed:
        main(["recipe=tiny_cpu", f"model.path={UNCACHED}", "model.tokenizer_path=char", "trainer.orchestrator=local",
              f"trainer.output_dir={tmp_path / 'run'}"])
    assert str(failed.value).startswith(f"error: model.path='{UNCACHED}'") and "\n" not in str(failed.value)
    assert not (tmp_path / "run").exists()

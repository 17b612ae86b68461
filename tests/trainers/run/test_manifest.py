"""Checkpoint manifests (sizes and SHA-256 against ``hashlib`` over the files), the checks when a
checkpoint is found (fallback with a warning, an error naming the path), and removal of temporary
checkpoint directories of dead processes only."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from vortex_rl.trainers.config import GRPOConfig, ModelConfig
from vortex_rl.trainers.config.dataclass_dicts import from_dict
from vortex_rl.trainers.local.learner import LocalLearner
from vortex_rl.trainers.local.model_loader import load_actor
from vortex_rl.trainers.run.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vortex_rl.trainers.run.manifest import CheckpointError, clean_stale_temp
from vortex_rl.trainers.run.run_dir import resume_checkpoint


def config(**trainer):
    return from_dict(GRPOConfig, {"recipe": "tiny_cpu", "model": {"path": "random:qwen3"}, "trainer": trainer})


@pytest.fixture
def two_checkpoints(tmp_path, make_tiny_actor):
    model, tokenizer = make_tiny_actor()
    learner = LocalLearner(model, config(), torch.device("cpu"))
    paths = [save_checkpoint(tmp_path, step, learner=learner, tokenizer=tokenizer, trainer_state={"sampler": {}})
             for step in (1, 2)]
    return tmp_path, paths


def test_manifest_lists_every_file_with_its_size_and_hash(two_checkpoints):
    _, (_, path) = two_checkpoints
    files = json.loads((path / "manifest.json").read_text())["files"]
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(files) == on_disk and "model/model.safetensors" in files and "learner.pt" in files
    for name, entry in files.items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_bad_newest_checkpoint_is_skipped_with_a_warning(two_checkpoints):
    run_dir, (first, second) = two_checkpoints
    weights = second / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1  # same size: only the hash tells
    weights.write_bytes(bytes(data))
    warnings = []
    assert resume_checkpoint(config(resume="auto"), run_dir, warn=warnings.append) == first
    assert len(warnings) == 1 and str(second) in warnings[0] and "model/model.safetensors" in warnings[0]
    with pytest.raises(CheckpointError, match=f"checkpoint {second} is corrupt: model/model.safetensors does not match"):
        resume_checkpoint(config(resume=str(second)), run_dir)  # named explicitly: an error, no fallback
    weights.write_bytes(bytes(data[:-10]))  # cut short: the cheap scan (sizes) sees it too
    assert latest_checkpoint(run_dir) == first
    (first / "learner.pt").unlink()
    warnings.clear()
    assert resume_checkpoint(config(resume="auto"), run_dir, warn=warnings.append) is None
    assert "learner.pt is missing" in warnings[1]


def test_a_corrupt_checkpoint_without_manifest_names_its_path(two_checkpoints, make_tiny_actor):
    _, (_, path) = two_checkpoints
    (path / "manifest.json").unlink()  # as written before manifests: nothing to check against
    (path / "model" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    _, tokenizer = make_tiny_actor()
    with pytest.raises(ValueError, match=f"checkpoint model {path / 'model'} could not be loaded"):
        load_actor(ModelConfig(path="random:qwen3"), tokenizer, device=torch.device("cpu"), seed=0,
                   checkpoint_dir=str(path / "model"))
    (path / "trainer_state.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: trainer_state.pt could not be read"):
        load_checkpoint(path)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temp_dirs_of_dead_processes_are_removed(tmp_path):
    root = tmp_path / "checkpoints"
    dead, alive = dead_pid(), os.getpid()
    stale = root / f".tmp-global_step_3-{dead}"
    live = root / f".tmp-global_step_4-{alive}"
    for path in (stale, live):
        (path / "model").mkdir(parents=True)
        (path / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    pointer = root / f".latest.tmp-{dead}"
    pointer.write_text("global_step_3")
    keep = root / "global_step_2"
    keep.mkdir()
    messages = []
    assert sorted(clean_stale_temp(tmp_path, warn=messages.append)) == sorted([stale, pointer])
    assert not stale.exists() and not pointer.exists() and live.is_dir() and keep.is_dir()
    assert any(str(dead) in m and "no longer running" in m for m in messages)

"""Run directories and the checkpoint a run resumes from."""

import os

import pytest

from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.run.run_dir import resolve_run_dir, resume_checkpoint
from vortex_rl.trainers.config.dataclass_dicts import from_dict


def config(**trainer):
    return from_dict(GRPOConfig, {"recipe": "tiny_cpu", "model": {"path": "random:qwen3"}, "trainer": trainer})


def fake_checkpoint(run_dir, step):
    path = run_dir / "checkpoints" / f"global_step_{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.pt").write_bytes(b"")
    return path


def test_run_dir_defaults_and_auto_resume(tmp_path):
    fresh = resolve_run_dir(config(), tmp_path)
    assert fresh.parent == tmp_path / "runs" / "tiny_cpu" and not fresh.exists()
    assert resolve_run_dir(config(output_dir=str(tmp_path / "x")), tmp_path) == tmp_path / "x"
    old, new, empty = (tmp_path / "runs" / "tiny_cpu" / name for name in ("a", "b", "c"))
    fake_checkpoint(old, 2)
    fake_checkpoint(new, 4)
    empty.mkdir()
    os.utime(old, (1, 1))
    os.utime(new, (2, 2))
    assert resolve_run_dir(config(resume="auto"), tmp_path) == new  # newest run that has a checkpoint
    assert resolve_run_dir(config(resume="disable"), tmp_path) not in (old, new, empty)


def test_resume_checkpoint(tmp_path):
    assert resume_checkpoint(config(resume="disable"), tmp_path) is None
    assert resume_checkpoint(config(resume="auto"), tmp_path) is None  # nothing yet: start fresh
    fake_checkpoint(tmp_path, 2)
    latest = fake_checkpoint(tmp_path, 10)
    assert resume_checkpoint(config(resume="auto"), tmp_path) == latest
    assert resume_checkpoint(config(resume=str(tmp_path)), tmp_path / "elsewhere") == latest
    assert resume_checkpoint(config(resume=str(latest)), tmp_path) == latest
    with pytest.raises(FileNotFoundError, match="neither a checkpoint nor a run directory"):
        resume_checkpoint(config(resume=str(tmp_path / "none")), tmp_path)


def test_check_run_dir_refuses_an_existing_run(tmp_path):
    from vortex_rl.trainers.run.run_dir import RunDirError, check_run_dir

    run = tmp_path / "run"
    check_run_dir(config(), run, None)  # nothing there yet
    run.mkdir()
    (run / "checkpoints").mkdir()
    check_run_dir(config(), run, None)  # an empty directory is not a run
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(RunDirError, match=r"already holds a run \(metrics.jsonl\); nothing was changed. "
                                          r"Continue it with trainer.resume=auto, or start a new run"):
        check_run_dir(config(), run, None)
    with pytest.raises(RunDirError, match="It has no valid checkpoint to resume from: start a new run"):
        check_run_dir(config(resume="auto"), run, None)
    own = fake_checkpoint(run, 3)
    check_run_dir(config(resume="auto"), run, own)  # continuing this run
    other = fake_checkpoint(tmp_path / "other", 5)
    with pytest.raises(RunDirError, match="already holds a run"):  # another run's checkpoint into this run
        check_run_dir(config(resume=str(other)), run, other)

"""A run protects its directory and explains itself, through the command-line entry point on tiny_cpu
(each run here: 1-2 steps, ~5 s): an existing run is refused, not overwritten; a failed start leaves no
directory and a failed resume leaves the run as it was; a corrupt newest checkpoint is skipped with a
warning and the run resumes from the one before; expected failures end in one line."""

import json

import pytest

from vortex_rl.train import main

pytest.importorskip("math_verify")
pytest.importorskip("hydra", reason="the entry point composes recipes with hydra-core")

TINY = ["recipe=tiny_cpu", "trainer.logger=[console]", "sft_warmup.steps=0", "data.train_batch_size=4",
        "actor.ppo_mini_batch_size=4", "rollout.n=2", "data.val_dataset=null", "reward.num_workers=0",
        "trainer.orchestrator=local", "trainer.save_freq=1"]


def snapshot(root):
    """Every file under ``root`` with its bytes, and where each symlink-free pointer leads."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def bad_data_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "caf\xe9", "answer": "1"}\n')
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reliab") / "run"
    main(TINY + [f"trainer.output_dir={run_dir}", "trainer.total_steps=2"])
    return run_dir


def test_an_existing_run_is_refused_and_left_untouched(finished_run):
    before = snapshot(finished_run)
    assert steps(finished_run) == [0, 1, 2] and "checkpoints/global_step_2/manifest.json" in before
    with pytest.raises(SystemExit) as refused:
        main(TINY + [f"trainer.output_dir={finished_run}", "trainer.total_steps=1"])
    message = str(refused.value)
    assert str(finished_run) in message and "trainer.resume=auto" in message and "new trainer.output_dir" in message
    assert "\n" not in message
    assert snapshot(finished_run) == before  # nothing truncated, replaced or repointed


def test_a_failed_start_leaves_no_directory_and_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("VORTEX_DEBUG", raising=False)
    bad = bad_data_file(tmp_path)
    args = TINY + [f"trainer.output_dir={tmp_path / 'new'}", "data.train_dataset=file", f"data.train_files={bad}"]
    with pytest.raises(SystemExit) as failed:
        main(args)
    message = str(failed.value)
    assert message.startswith("error: ") and f"{bad}: line 2 is not UTF-8" in message and "\n" not in message
    assert not (tmp_path / "new").exists()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the traceback on request: the exception itself
    with pytest.raises(ValueError, match="line 2 is not UTF-8"):
        main(args)
    assert not (tmp_path / "new").exists()


def test_a_failed_resume_keeps_the_config(finished_run, tmp_path):
    before = snapshot(finished_run)
    with pytest.raises(SystemExit, match="line 2 is not UTF-8"):
        main(TINY + [f"trainer.output_dir={finished_run}", "trainer.resume=auto", "trainer.total_steps=3",
                     "data.train_dataset=file", f"data.train_files={bad_data_file(tmp_path)}"])
    assert snapshot(finished_run) == before


def test_resume_skips_a_corrupt_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(TINY + [f"trainer.output_dir={run_dir}", "trainer.total_steps=2"])
    weights = run_dir / "checkpoints" / "global_step_2" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the hash sees it
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    main(TINY + [f"trainer.output_dir={run_dir}", "trainer.total_steps=3", "trainer.resume=auto"])
    out = capsys.readouterr()
    assert f"skipping a bad checkpoint: checkpoint {run_dir / 'checkpoints' / 'global_step_2'} is corrupt" in out.out + out.err
    assert f"resuming from {run_dir / 'checkpoints' / 'global_step_1'}" in out.out + out.err
    assert steps(run_dir) == [0, 1, 2, 3]  # step 2 re-trained from step 1, then step 3
    assert (run_dir / "checkpoints" / "latest").read_text() == "global_step_3"
    from vortex_rl.trainers.run.manifest import verify_checkpoint

    verify_checkpoint(run_dir / "checkpoints" / "global_step_2")  # the re-saved step 2 is whole again

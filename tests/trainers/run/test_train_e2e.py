"""tiny_cpu end to end through the command line entry point: metrics, plots, checkpoints, and a resumed
run (2 steps + 2 more) reproducing an uninterrupted 4-step run."""

import json
import math

import pytest
import torch

from vortex_rl.train import main

pytest.importorskip("math_verify")
pytest.importorskip("hydra", reason="the entry point composes recipes with hydra-core")
pytest.importorskip("matplotlib")

SMALL = ["recipe=tiny_cpu", "trainer.logger=[console]", "sft_warmup.steps=10", "data.train_batch_size=4",
         "actor.ppo_mini_batch_size=2", "rollout.n=4", "data.val_max_samples=4", "rollout.val_kwargs.n=2",
         "trainer.test_freq=2", "trainer.save_freq=2", "reward.num_workers=1",
         "trainer.orchestrator=local"]  # the Ray orchestrator has its own end-to-end tests (tests/trainers/ray/test_train.py)
NONDETERMINISTIC = ("timing_s/", "perf/")


def read_metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows}


def comparable(row):
    return {k: v for k, v in row.items() if not k.startswith(NONDETERMINISTIC)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    # The uninterrupted run also frees the engine's KV cache between rollouts: sleep/wake must not change samples.
    main(SMALL + [f"trainer.output_dir={root / 'straight'}", "trainer.total_steps=4", "rollout.free_cache_engine=true"])
    main(SMALL + [f"trainer.output_dir={root / 'resumed'}", "trainer.total_steps=2"])
    main(SMALL + [f"trainer.output_dir={root / 'resumed'}", "trainer.total_steps=4", "trainer.resume=auto"])
    return root / "straight", root / "resumed"


def test_run_directory_contents(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = runs[0]
    metrics = read_metrics(run)
    assert sorted(metrics) == [0, 1, 2, 3, 4]
    assert "sft/loss_last" in metrics[0] and metrics[0]["data/train_prompts"] == 79
    for step in (1, 2, 3, 4):
        row = metrics[step]
        assert 0.0 <= row["critic/rewards/mean"] <= 1.0 and row["reward/timeouts"] == 0
        assert row["response_length/mean"] >= 1 and 0 <= row["response_length/clip_ratio"] <= 1
        assert row["actor/entropy"] > 0
        if row["batch/skipped_step"]:  # every group uniform: no optimizer step, no actor/* update metrics
            assert "actor/pg_loss" not in row and "timing_s/update_actor" not in row
        else:
            assert math.isfinite(row["actor/pg_loss"]) and row["actor/grad_norm"] >= 0
        assert 0 < row["rollout_corr/alpha_mean"] <= 1 + 1e-6 and "rollout_corr/alpha_p5/pos_0-2048" in row
        assert (row["rollout_corr/alpha_mean"] <= row["rollout_corr/alpha_est_mean"] + 1e-6
                <= row["rollout_corr/alpha_upper_mean"] + 2e-6 <= 1 + 3e-6)
        assert row["rollout/weights_checksum_rel_diff"] < 1e-6
        names = ("gen", "reward", "old_log_prob", "update_weights") + (() if row["batch/skipped_step"] else ("update_actor",))
        stages = [row[f"timing_s/{name}"] for name in names]
        # every stage ran and took time, and the stages nest inside the step's own timer
        assert min(stages) > 0 and sum(stages) <= row["timing_s/step"] * (1 + 1e-6)
        assert row["perf/throughput"] > 0
    for step in (0, 2, 4):  # val_before_train, then every test_freq=2 steps
        assert 0 <= metrics[step]["val-core/synthetic_addition/acc/mean@2"] <= metrics[step]["val-core/synthetic_addition/acc/pass@2"]
    assert "val-core/synthetic_addition/acc/mean@2" not in metrics[3]
    assert (run / "reward.png").stat().st_size > 0 and (run / "val_acc.png").stat().st_size > 0
    assert "tiny_cpu" in (run / "config.yaml").read_text()
    checkpoint = run / "checkpoints" / "global_step_4"
    assert (run / "checkpoints" / "latest").read_text() == "global_step_4"
    assert (checkpoint / "model" / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(checkpoint / "model")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint / "model")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer.apply_chat_template(
            [{"role": "user", "content": "3+4"}], add_generation_prompt=True, tokenize=True)["input_ids"]])).logits
    assert torch.isfinite(logits).all()


def test_resumed_run_reproduces_the_uninterrupted_one(runs):
    straight, resumed = (read_metrics(r) for r in runs)
    assert sorted(resumed) == sorted(straight) == [0, 1, 2, 3, 4]
    for step in straight:
        a, b = comparable(straight[step]), comparable(resumed[step])
        assert a.keys() == b.keys(), step
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (step, key)
    assert (runs[1] / "checkpoints" / "global_step_2").is_dir()

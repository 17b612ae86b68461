"""The budget guard on tiny_cpu end to end: budgets logged per bin, raised when alpha_p5 is below the floor,
kept in checkpoints, and a resumed run reproducing the uninterrupted one."""

import pytest
import torch

from tests.trainers.run.test_train_e2e import SMALL, comparable, read_metrics
from vortex_rl.train import main

# alpha_p5 on tiny_cpu is about 0.9: a floor of 0.999 makes the guard raise; bins of 8 context tokens
GUARD = ["rollout.sparse_guard.min_alpha_p5=0.999", "rollout.sparse_guard.bin_tokens=8"]
BINS = ("0-8", "8-16", "16-24", "24-32")  # max_prompt_length 16 + max_response_length 12 = 28 tokens


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    main(SMALL + GUARD + [f"trainer.output_dir={root / 'straight'}", "trainer.total_steps=4"])
    main(SMALL + GUARD + [f"trainer.output_dir={root / 'resumed'}", "trainer.total_steps=2"])
    main(SMALL + GUARD + [f"trainer.output_dir={root / 'resumed'}", "trainer.total_steps=4", "trainer.resume=auto"])
    return root / "straight", root / "resumed"


def test_budgets_are_logged_and_raised_up_to_dense(runs):
    metrics = read_metrics(runs[0])
    for step in (1, 2, 3, 4):
        assert all(f"rollout/budget_pages/pos_{b}" in metrics[step] for b in BINS)
    first = {b: metrics[1][f"rollout/budget_pages/pos_{b}"] for b in BINS}
    assert first == {b: 4.0 for b in BINS}  # rollout.sparse budget_pages=4 everywhere
    last = {b: metrics[4][f"rollout/budget_pages/pos_{b}"] for b in BINS}
    assert sum(metrics[s]["rollout/budget_changes"] for s in (1, 2, 3)) > 0
    # contexts of 8-16 tokens hold most response tokens: raised (doubled) to dense, 8 pages of 2 tokens;
    # 0-8 starts at dense (4 pages) and cannot grow; bins without tokens keep their budget
    assert last["8-16"] == 8 and last["0-8"] == 4
    assert all(last[b] <= -(-int(b.split("-")[1]) // 2) for b in BINS)  # never past dense (page size 2)
    state = torch.load(runs[0] / "checkpoints" / "global_step_4" / "trainer_state.pt", weights_only=True)
    assert len(state["budget_guard"]["budgets"]) == len(BINS)


def test_resumed_guarded_run_reproduces_the_uninterrupted_one(runs):
    straight, resumed = (read_metrics(r) for r in runs)
    for step in (3, 4):  # the steps after the resume need the guard's restored schedule to match
        a, b = comparable(straight[step]), comparable(resumed[step])
        assert a.keys() == b.keys(), step
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (step, key)

"""A running engine takes a new sparse budget schedule between steps, without a rebuild: its samples then
equal those of an engine built with that schedule."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.sparse import SparseConfig

PROMPT = [[(i * 13) % 300 + 1 for i in range(150)]]  # 10 pages of 16 tokens
PARAMS = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True, logprobs=3)
SMALL = ((64, 4), (256, 4))
LARGE = ((64, 4), (256, 16))


def engine(model, schedule, budget):
    sparse = SparseConfig(budget_pages=budget, budget_schedule=schedule, max_budget_pages=16)
    return Engine.from_pretrained(model, config=EngineConfig(num_pages=64, max_model_len=256, sparse=sparse))


def run(e):
    return e.generate(PROMPT, PARAMS, use_tqdm=False)[0][0]


def test_swapped_schedule_equals_a_fresh_engine(make_tiny_hf_model):
    model = make_tiny_hf_model("qwen3")
    live = engine(model, SMALL, 4)
    small = run(live)
    width = live.runner.flow_runner.config.max_budget
    live.set_budget_schedule(LARGE, 16)
    swapped = run(live)
    fresh = run(engine(model, LARGE, 16))
    assert swapped.token_ids == fresh.token_ids
    torch.testing.assert_close(torch.tensor(swapped.logprobs), torch.tensor(fresh.logprobs), atol=1e-6, rtol=0)
    # the budget mattered (so the swap was not a no-op), and the page-list width stayed what it was built with
    assert not torch.allclose(torch.tensor(small.logprobs), torch.tensor(swapped.logprobs), atol=1e-4)
    assert live.runner.flow_runner.config.max_budget == width == 16
    live.set_budget_schedule(SMALL, 4)
    back = run(live)
    torch.testing.assert_close(torch.tensor(back.logprobs), torch.tensor(small.logprobs), atol=1e-6, rtol=0)


def test_a_schedule_that_does_not_fit_is_refused(make_tiny_hf_model):
    live = engine(make_tiny_hf_model("qwen3"), SMALL, 4)
    with pytest.raises(ValueError, match="exceeds max_budget=16"):
        live.set_budget_schedule(((64, 4), (256, 32)), 32)
    with pytest.raises(ValueError, match="has 1 steps; this flow runner was built with 2"):
        live.set_budget_schedule(((256, 8),), 8)
    assert live.runner.flow_runner.config.budget_schedule == SMALL  # unchanged after a refusal
    with pytest.raises(ValueError, match=r"set_budget_schedule\(None, 8\) needs schedules on both sides"):
        live.set_budget_schedule(None, 8)
    plain = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        num_pages=64, max_model_len=256, sparse=SparseConfig(budget_pages=4)))
    with pytest.raises(ValueError, match="built with budget_schedule=None"):
        plain.set_budget_schedule(SMALL, 4)



def test_room_for_a_larger_budget_changes_no_bit(make_tiny_hf_model):
    """An engine whose page lists are sized for 14 pages but run at a budget of 4 (the budget guard's
    engine before it raises anything) gives bit-identical log-probs to one sized for 4, so a guard that
    never fires leaves the run as it was. The CPU kernel attends over the listed columns only: with the
    -1 columns in, the same keys rounded differently (4.8e-7 here) and guarded runs drifted apart."""
    model = make_tiny_hf_model("qwen3")
    prompts = [[(i * 13 + n) % 300 + 1 for i in range(n)] for n in range(6, 22)] * 2  # 3-11 pages of 2
    results = {}
    for room in (None, 14):
        sparse = SparseConfig(page_size=2, budget_pages=4, sink_pages=1, local_pages=2, max_budget_pages=room)
        e = Engine.from_pretrained(model, config=EngineConfig(num_pages=512, max_model_len=64, sparse=sparse))
        assert e.runner.flow_runner.config.max_budget == (room or 4)
        results[room] = [r[0] for r in e.generate(prompts, PARAMS, use_tqdm=False)]
    for tight, roomy in zip(results[None], results[14]):
        assert tight.token_ids == roomy.token_ids
        assert torch.equal(torch.tensor(tight.logprobs), torch.tensor(roomy.logprobs))

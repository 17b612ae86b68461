"""`VortexServer` as verl's agent loop uses it: many concurrent ``generate`` calls batched continuously on
one engine, results equal to the engine's own ``generate`` (independent reference: the engine run alone
per prompt, same seeds), verl's ``TokenOutput``, aborts, parking until ``resume_generation``, sleep."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("verl")
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from tests.integrations.verl.conftest import make_server  # noqa: E402
from vortex_rl.rollout import SamplingParams  # noqa: E402

PROMPTS = [[(i * 13 + j) % 300 + 1 for j in range(length)] for i, length in enumerate([3, 9, 17, 30, 8, 25])]


def verl_params(seed: int, **kw) -> dict:
    """What verl's AgentLoopManager sends (agent_loop.py ~590-596), plus a seed for the comparison."""
    return {**dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True, seed=seed), **kw}


def test_concurrent_generates_are_batched_and_match_the_engine(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)
    ref = make_server(tiny_model, ignore_eos=True).engine

    async def main():
        return await asyncio.gather(*[server.generate(p, verl_params(100 + i), request_id=f"r{i}")
                                      for i, p in enumerate(PROMPTS)])

    outs = asyncio.run(main())
    assert server.loop.max_batch == len(PROMPTS)  # all six decoded together
    # one prefill step, then response_length - 1 decode steps: not one pass per request; with overlap
    # scheduling a last engine.step() call launches nothing and reads the last step's tokens
    stats = server.engine.stats
    assert (stats.prefill_steps, stats.decode_steps) == (1, 23) and server.loop.num_steps == 24 + 1
    for i, (prompt, out) in enumerate(zip(PROMPTS, outs)):
        assert isinstance(out, TokenOutput) and out.stop_reason == "completed"
        want = ref.generate([prompt], SamplingParams(max_new_tokens=24, ignore_eos=True, seed=100 + i),
                            use_tqdm=False)[0][0]
        assert out.token_ids == want.token_ids and len(out.token_ids) == 24  # response_length
        torch.testing.assert_close(torch.tensor(out.log_probs), torch.tensor(want.logprobs), atol=1e-4, rtol=0)


def test_late_requests_join_the_running_batch(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)

    async def main():
        first = asyncio.ensure_future(server.generate(PROMPTS[0], verl_params(1), request_id="a"))
        while server.loop.num_steps < 5:
            await asyncio.sleep(0.001)
        second = await server.generate(PROMPTS[1], verl_params(2, max_tokens=4), request_id="b")
        return second, first.done(), await first

    second, first_done_before, first = asyncio.run(main())
    assert not first_done_before and len(second.token_ids) == 4 and len(first.token_ids) == 24
    assert server.loop.max_batch == 2
    assert server.loop.num_steps < 24 + 5  # b's steps were a's steps


def test_max_tokens_follow_verl_lengths_and_logprobs_are_optional(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)
    long_prompt = list(range(1, 61))  # 60 of prompt_length + response_length = 88: room for 24
    out = asyncio.run(server.generate(long_prompt, verl_params(0, logprobs=False), request_id="x"))
    assert len(out.token_ids) == 24 and out.log_probs is None
    past = list(range(1, 89))
    out = asyncio.run(server.generate(past, verl_params(0), request_id="y"))
    assert out.token_ids == [] and out.stop_reason == "completed"


def test_bad_sampling_params_are_refused_by_name(tiny_model):
    server = make_server(tiny_model)
    with pytest.raises(ValueError, match="repetition_penalty=1.1"):
        asyncio.run(server.generate(PROMPTS[0], verl_params(0, repetition_penalty=1.1), request_id="x"))
    with pytest.raises(ValueError, match=r"\['min_p'\] are not supported"):
        asyncio.run(server.generate(PROMPTS[0], verl_params(0, min_p=0.1), request_id="x"))
    with pytest.raises(ValueError, match="prompt 0 must hold"):
        asyncio.run(server.generate([999999], verl_params(0), request_id="x"))
    with pytest.raises(NotImplementedError, match="text-only"):
        asyncio.run(server.generate(PROMPTS[0], verl_params(0), request_id="x", image_data=[object()]))


def test_abort_parks_new_requests_until_resume(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)

    async def main():
        running = [asyncio.ensure_future(server.generate(p, verl_params(i), request_id=str(i)))
                   for i, p in enumerate(PROMPTS[:3])]
        while server.loop.num_steps < 4:
            await asyncio.sleep(0.001)
        assert await server.abort_all_requests() == 3
        aborted = await asyncio.gather(*running)
        parked = asyncio.ensure_future(server.generate(PROMPTS[3], verl_params(9), request_id="p"))
        await asyncio.sleep(0.05)
        parked_early = parked.done()
        await server.resume_generation()
        return aborted, parked_early, await parked

    aborted, parked_early, after = asyncio.run(main())
    assert all(o.stop_reason == "aborted" and 0 < len(o.token_ids) < 24 for o in aborted)
    assert all(len(o.log_probs) == len(o.token_ids) for o in aborted)
    assert not parked_early and after.stop_reason == "completed" and len(after.token_ids) == 24
    assert server.engine.pages.num_used == 0


def test_reject_request_answers_aborted_at_once(tiny_model):
    server = make_server(tiny_model)

    async def main():
        await server.abort_all_requests(reject_request=True)
        return await server.generate(PROMPTS[0], verl_params(0), request_id="r")

    out = asyncio.run(main())
    assert out.stop_reason == "aborted" and out.token_ids == [] and server.engine.stats.generated_tokens == 0


def test_sleep_frees_the_cache_and_wake_restores_it(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)

    async def main():
        before = await server.generate(PROMPTS[2], verl_params(5), request_id="a")
        await server.release_kv_cache()
        slept = server.engine.runner.kv is None and server.engine.sleeping
        await server.resume_kv_cache()
        after = await server.generate(PROMPTS[2], verl_params(5), request_id="b")
        return before, slept, after

    before, slept, after = asyncio.run(main())
    assert slept and before.token_ids == after.token_ids


def test_control_calls_refuse_to_run_under_requests(tiny_model):
    server = make_server(tiny_model, ignore_eos=True)

    async def main():
        task = asyncio.ensure_future(server.generate(PROMPTS[0], verl_params(0), request_id="a"))
        while server.loop.num_steps < 2:
            await asyncio.sleep(0.001)
        with pytest.raises(RuntimeError, match=r"sleep\(\) while 1 requests are in flight"):
            await server.sleep()
        return await task

    assert len(asyncio.run(main()).token_ids) == 24

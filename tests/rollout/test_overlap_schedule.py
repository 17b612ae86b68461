"""Overlap scheduling: a step is launched before the previous step's tokens are read, and nothing a caller
sees changes.

The reference is the same engine with ``overlap_schedule=False``, which reads every step's tokens before
scheduling the next. Seeded, counter-based sampling makes the two runs comparable token for token. Stop
tokens make samples stop at unpredictable steps, which is where overlap runs one extra step for them and
discards its token; that step's batch holds one row more than the serial run's, so float32 rounding
differs there (1.9e-6 measured), and log-probs are compared to 1e-5. A sequence that reached its length
is not scheduled again, so without stops the batches are the same.
"""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.sequence import PENDING_TOKEN
from vortex_rl.sparse import SparseConfig

PROMPTS = [[(i * 13 + j * 5) % 300 + 1 for j in range(length)] for i, length in enumerate([17, 40, 6, 29])]
SPARSE = SparseConfig(page_size=8, budget_pages=3, sink_pages=1, local_pages=1)


@pytest.fixture(scope="module")
def model(make_tiny_hf_model):
    return make_tiny_hf_model("qwen3")


def build(model, overlap: bool, flow: str = "block_sparse_attention", num_pages: int = 256) -> Engine:
    return Engine.from_pretrained(model, config=EngineConfig(
        flow=flow, sparse=SPARSE, num_pages=num_pages, max_model_len=128, dtype="float32", device="cpu",
        overlap_schedule=overlap))


def stop_params(engine: Engine) -> list[SamplingParams]:
    """Per prompt: ~1 in 12 tokens stops (so samples end at different steps), mixed lengths and
    log-prob requests, one greedy prompt."""
    stops = tuple(range(3, engine.arch.vocab_size, 12))
    return [SamplingParams(temperature=0.9, max_new_tokens=30, stop=stops, logprobs=2, seed=11),
            SamplingParams(temperature=1.0, max_new_tokens=12, stop=stops, seed=12),
            SamplingParams(temperature=0.0, max_new_tokens=25, ignore_eos=True),
            SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=40, stop=stops, logprobs=1, seed=13)]


def assert_same(got, want):
    for group_got, group_want in zip(got, want, strict=True):
        for a, b in zip(group_got, group_want, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            assert PENDING_TOKEN not in a.token_ids and len(a.logprobs) == len(a.token_ids)
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
            if b.top_logprobs is None:
                assert a.top_logprobs is None
                continue
            assert len(a.top_logprobs) == len(a.token_ids)
            for top_a, top_b in zip(a.top_logprobs, b.top_logprobs, strict=True):
                assert top_a.keys() == top_b.keys()


@pytest.mark.parametrize("flow", ["block_sparse_attention", "dense"])
def test_overlap_samples_what_serial_scheduling_samples(model, flow):
    serial, overlap = build(model, False, flow), build(model, True, flow)
    want = serial.generate(PROMPTS, stop_params(serial), n=3, use_tqdm=False)
    got = overlap.generate(PROMPTS, stop_params(overlap), n=3, use_tqdm=False)
    assert_same(got, want)
    reasons = {c.finish_reason for group in want for c in group}
    assert reasons == {"stop", "length"}  # both kinds of ending are exercised
    # Every sample that stopped on a token before its length ran one step more under overlap, only those.
    params = stop_params(serial)
    stopped = sum(c.finish_reason == "stop" and len(c.token_ids) < params[i].max_new_tokens
                  for i, group in enumerate(want) for c in group)
    assert overlap.stats.discarded_tokens == stopped and serial.stats.discarded_tokens == 0
    assert overlap.stats.generated_tokens == serial.stats.generated_tokens
    assert overlap.stats.decode_steps >= serial.stats.decode_steps
    assert overlap.stats.pages_in_use == 0 and not overlap.has_unfinished_requests()
    assert overlap._in_flight is None  # generate() read its last step: nothing leaks into the next call


def test_generate_reads_its_last_step_even_when_every_sample_stopped(model):
    """All samples stop on their first decoded token: the step launched alongside their reading holds
    only finished samples, and generate() must discard it before returning."""
    engine = build(model, True)
    stop_all = SamplingParams(temperature=1.0, max_new_tokens=20, stop=tuple(range(engine.arch.vocab_size)), seed=5)
    out = engine.generate(PROMPTS, stop_all, n=2, use_tqdm=False)
    assert all(len(c.token_ids) == 1 and c.finish_reason == "stop" for group in out for c in group)
    assert engine._in_flight is None and engine.stats.generated_tokens == 8
    engine.reset_stats()
    engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2, ignore_eos=True), use_tqdm=False)
    assert engine.stats.discarded_tokens == 0 and engine.stats.generated_tokens == 2


def test_samples_at_their_length_free_their_slot_when_it_is_sampled(model):
    """Requests wait for slots (4 for groups of 2): a sample that reaches its length gives its slot and
    pages back in the step that samples its last token, not when the token is read a step later, so
    overlap admits each request in the same step as serial scheduling: same batches, bit-equal
    log-probs."""
    def run(overlap: bool):
        engine = Engine.from_pretrained(model, config=EngineConfig(
            flow="block_sparse_attention", sparse=SPARSE, num_pages=256, max_model_len=128, max_num_seqs=4,
            dtype="float32", device="cpu", overlap_schedule=overlap))
        batches, inner = [], engine.runner.run
        engine.runner.run = lambda batch, **kw: batches.append((batch.is_prefill, [s.seq_id for s in batch.seqs])) or inner(batch, **kw)
        params = [SamplingParams(temperature=1.0, max_new_tokens=m, ignore_eos=True, seed=20 + m) for m in (7, 3, 11, 5)]
        return engine.generate(PROMPTS, params, n=2, use_tqdm=False), batches, engine

    (want, serial_batches, serial), (got, overlap_batches, overlap) = run(False), run(True)
    assert overlap_batches == serial_batches
    assert sum(prefill for prefill, _ in serial_batches) >= 3  # admissions waited for slots
    assert max(len(ids) for _, ids in serial_batches) == 4  # forked samples count against max_num_seqs
    for group_got, group_want in zip(got, want, strict=True):
        for a, b in zip(group_got, group_want, strict=True):
            assert a.token_ids == b.token_ids and a.logprobs == b.logprobs and a.finish_reason == "length"
    assert overlap.stats.discarded_tokens == 0 and overlap.stats.pages_in_use == 0
    assert not overlap.scheduler.retiring and not overlap.has_unfinished_requests()


def test_overlap_under_preemption_matches_a_roomy_serial_run(model):
    """A pool of 16 pages swaps sequences out while their last token is still in flight."""
    roomy, tight = build(model, False), build(model, True, num_pages=16)
    want = roomy.generate(PROMPTS, stop_params(roomy), n=3, use_tqdm=False)
    got = tight.generate(PROMPTS, stop_params(tight), n=3, use_tqdm=False)
    assert tight.stats.preemptions > 0 and roomy.stats.preemptions == 0
    # Batches differ in size between the pools: float32 rounding only (as in test_preemption).
    for group_got, group_want in zip(got, want, strict=True):
        for a, b in zip(group_got, group_want, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
    assert tight.stats.pages_in_use == 0 and tight.swap.num_used == 0


def test_abort_with_a_step_in_flight_returns_only_read_tokens(model):
    engine = build(model, True)
    params = SamplingParams(temperature=1.0, max_new_tokens=50, ignore_eos=True, logprobs=1, seed=3)
    group = engine.add_request(PROMPTS[1], params, n=2)
    for _ in range(6):
        engine.step()
    assert engine._in_flight is not None and all(seq.token_ids[-1] == PENDING_TOKEN for seq in group)
    assert engine.abort_request(group) == 2
    for seq in group:
        c = seq.to_completion("")
        assert c.finish_reason == "abort" and PENDING_TOKEN not in c.token_ids
        assert len(c.token_ids) == len(c.logprobs) == len(c.top_logprobs) == 6  # 6 steps, all read
    assert engine.collect_finished() == group and engine.stats.pages_in_use == 0


def test_request_api_reads_each_step_one_call_later(model):
    """``step()`` returns the samples that finished in the step it read (the previous one); the loop
    ends with a call that launches nothing and reads the last step."""
    engine = build(model, True)
    params = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
    [seq] = engine.add_request(PROMPTS[2], params)
    finished_per_call = []
    while engine.has_unfinished_requests():
        finished_per_call.append(engine.step())
    # prefill (samples token 1), decode (token 2), decode (token 3), then a call that only reads.
    assert finished_per_call == [0, 0, 0, 1] and seq.num_completion_tokens == 3
    assert engine.stats.decode_steps == 2 and engine.collect_finished() == [seq]


def test_a_pending_token_without_its_step_is_an_error(model):
    engine = build(model, True)
    engine.add_request(PROMPTS[0], SamplingParams(max_new_tokens=5, ignore_eos=True))
    engine.step()  # the prefill: its sampled token is in flight
    batch = engine.scheduler.schedule(tokens_in_flight=True)
    with pytest.raises(RuntimeError, match="pending but not in the step in flight"):
        engine.runner.run(batch)  # no feed: the input id is unknown on the host


def test_overlap_schedule_must_be_a_bool():
    with pytest.raises(ValueError, match="overlap_schedule='yes' must be True or False"):
        EngineConfig(overlap_schedule="yes")

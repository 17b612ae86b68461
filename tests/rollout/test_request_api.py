"""The engine's request API (add_request / step / abort_request / collect_finished), the asynchronous
counterpart of ``generate``: same tokens and log-probs as ``generate`` for the same seeds, requests that
arrive while others decode, aborts wherever a request is (waiting, decoding, swapped out)."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.sequence import SequenceStatus
from vortex_rl.sparse import SparseConfig

PROMPTS = [[(i * 11 + j) % 300 + 1 for j in range(length)] for i, length in enumerate([5, 17, 40, 33])]
SAMPLED = SamplingParams(temperature=1.0, top_k=40, max_new_tokens=24, ignore_eos=True, seed=7)


@pytest.fixture(scope="module")
def model(make_tiny_hf_model):
    return make_tiny_hf_model("qwen3")


def engine(model, flow="dense", **kw) -> Engine:
    kw.setdefault("num_pages", 128)
    return Engine.from_pretrained(model, config=EngineConfig(
        flow=flow, max_model_len=256, dtype="float32", device="cpu", sparse=SparseConfig(page_size=8, budget_pages=3),
        **kw))


def run(e: Engine) -> list:
    finished = []
    while e.has_unfinished_requests():
        e.step()
        finished += e.collect_finished()
    return finished


def assert_same(got, want, atol):
    assert got.token_ids == want.token_ids
    torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=atol, rtol=0)


@pytest.mark.parametrize("flow", ["dense", "block_sparse_attention"])
def test_request_loop_equals_generate_bit_for_bit(model, flow):
    """The same requests queued at once: the same batches as generate, so identical results."""
    want = engine(model, flow).generate(PROMPTS, SAMPLED, n=2, use_tqdm=False)
    e = engine(model, flow)
    groups = [e.add_request(p, SAMPLED, 2, prompt_index=i) for i, p in enumerate(PROMPTS)]
    finished = run(e)
    assert sorted(s.seq_id for s in finished) == sorted(s.seq_id for g in groups for s in g)
    for group, ref in zip(groups, want):
        for seq, w in zip(group, ref):
            assert_same(e._completion(seq), w, atol=0)


def test_a_request_arriving_mid_decode_joins_the_running_batch(model):
    """Continuous batching: B is added after A decoded 5 tokens and decodes in A's batch; each result
    equals that prompt generated alone (seeded streams; batch shapes differ, so fp32 rounding only)."""
    alone = [engine(model).generate([p], SAMPLED, use_tqdm=False)[0][0] for p in PROMPTS[:2]]
    e = engine(model)
    [a] = e.add_request(PROMPTS[0], SAMPLED)
    for _ in range(6):  # prefill + 5 decode steps
        e.step()
    assert a.num_completion_tokens == 6 and not a.is_finished
    [b] = e.add_request(PROMPTS[1], SAMPLED, prompt_index=1)
    e.step()  # b's prefill (samples b's first token)
    before = (a.num_completion_tokens, b.num_completion_tokens, e.stats.decode_steps)
    e.step()
    assert (a.num_completion_tokens, b.num_completion_tokens, e.stats.decode_steps) == tuple(x + 1 for x in before)
    finished = run(e)
    assert {s.seq_id for s in finished} == {a.seq_id, b.seq_id}
    assert_same(e._completion(a), alone[0], atol=1e-4)
    assert_same(e._completion(b), alone[1], atol=1e-4)


def test_abort_mid_decode_frees_pages_and_keeps_the_tokens_so_far(model):
    full = engine(model).generate([PROMPTS[2]], SAMPLED, n=2, use_tqdm=False)[0]
    e = engine(model)
    pages_free = e.pages.num_free
    group = e.add_request(PROMPTS[2], SAMPLED, 2)
    [waiting] = e.add_request(PROMPTS[3], SAMPLED, prompt_index=1)
    e.step()  # prefill of both
    for _ in range(3):
        e.step()
    assert e.abort_request(group) == 2 and e.abort_request(group) == 0  # a second abort is a no-op
    finished = e.collect_finished()
    assert finished == group and all(s.finish_reason == "abort" and s.is_finished for s in group)
    for seq, ref in zip(group, full):  # what it had generated is a prefix of the full run
        got = e._completion(seq)
        assert got.finish_reason == "abort" and len(got.token_ids) == 4
        assert got.token_ids == ref.token_ids[:4]
    run(e)  # the other request still completes
    assert waiting.finish_reason == "length" and e.pages.num_free == pages_free


def test_abort_before_admission_and_abort_all(model):
    e = engine(model, max_num_seqs=2)
    first = e.add_request(PROMPTS[0], SAMPLED, 2)
    late = e.add_request(PROMPTS[1], SAMPLED, 2)  # cannot be admitted while `first` runs (max_num_seqs=2)
    e.step()
    assert [s.status for s in late] == [SequenceStatus.WAITING] * 2
    assert e.abort_request(late) == 2 and [s.num_completion_tokens for s in late] == [0, 0]
    assert e.abort_all() == 2 and not e.has_unfinished_requests()
    assert {s.seq_id for s in e.collect_finished()} == {s.seq_id for s in first + late}
    assert e.pages.num_used == 0
    # the engine is usable again, and generate refuses to mix with requests of the request API
    e.add_request(PROMPTS[0], SAMPLED)
    with pytest.raises(RuntimeError, match="in flight"):
        e.generate([PROMPTS[1]], SAMPLED, use_tqdm=False)


def test_abort_a_swapped_out_request_releases_its_host_pages(model):
    e = engine(model, num_pages=17)  # too few 8-token pages for 4 samples of 40+24 tokens: some get swapped out
    groups = [e.add_request(PROMPTS[2], SAMPLED, 2), e.add_request(PROMPTS[3], SAMPLED, 2, prompt_index=1)]
    while not e.swap:
        e.step()
    swapped = e.swap.peek()
    group = next(g for g in groups if swapped in g)
    e.abort_request(group)
    assert swapped.finish_reason == "abort" and swapped.host_kv is None
    assert swapped not in e.swap.queue
    run(e)
    assert e.swap.num_used == 0 and e.pages.num_used == 0

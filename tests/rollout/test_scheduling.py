"""Scheduling: shared prompt pages, preemption by swapping, chunked prefill, stopping, capacity."""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.page_manager import pages_for

PROMPTS = [[(i * 7 + j) % 300 + 1 for j in range(length)] for i, length in enumerate([5, 16, 17, 40, 33, 70, 1, 90])]
GREEDY = SamplingParams(temperature=0, max_new_tokens=30, ignore_eos=True)


@pytest.fixture(scope="module")
def model(make_tiny_hf_model):
    return make_tiny_hf_model("qwen3")


def engine(model, **kw) -> Engine:
    kw.setdefault("num_pages", 128)
    return Engine.from_pretrained(model, config=EngineConfig(flow="dense", max_model_len=256, **kw))


def assert_same(a, b, atol=1e-5):
    for (x,), (y,) in zip(a, b):
        assert x.token_ids == y.token_ids
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def reference(model):
    return engine(model).generate(PROMPTS, GREEDY, use_tqdm=False)


@pytest.mark.parametrize("prompt_len", [40, 48])
def test_samples_of_a_prompt_share_its_full_pages(model, prompt_len):
    """n samples hold the prompt's full pages once; each adds only its own partial and generated pages."""
    prompt, n, new = list(range(1, prompt_len + 1)), 4, 20
    cached = prompt_len + new - 1  # the last sampled token is never written
    full = prompt_len // 16
    counts = {}
    for samples in (1, n):
        e = engine(model)
        e.generate([prompt], SamplingParams(temperature=1.0, seed=5, max_new_tokens=new, ignore_eos=True),
                   n=samples, use_tqdm=False)
        counts[samples] = e.stats.peak_pages
        assert e.stats.pages_in_use == 0
    assert counts[1] == pages_for(cached, 16)
    assert counts[n] == full + n * (pages_for(cached, 16) - full)


def test_shared_samples_equal_swapped_samples(model):
    """Seeded samples drawn over shared prompt pages equal the same samples swapped out and back in
    (a pool too small to keep all four)."""
    prompt, params = list(range(1, 41)), SamplingParams(temperature=0.9, top_p=0.95, seed=11, max_new_tokens=30,
                                                       ignore_eos=True)
    shared = engine(model).generate([prompt], params, n=4, use_tqdm=False)[0]
    tight_engine = engine(model, num_pages=9)
    tight = tight_engine.generate([prompt], params, n=4, use_tqdm=False)[0]
    assert tight_engine.stats.preemptions > 0
    assert len({tuple(c.token_ids) for c in shared}) > 1
    for a, b in zip(shared, tight):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_small_pool_preempts_and_every_request_completes(model, reference):
    e = engine(model, num_pages=8)  # the longest request alone needs 8 pages (90 + 29 tokens)
    out = e.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert e.stats.preemptions > 0 and e.stats.peak_pages <= 8 and e.stats.pages_in_use == 0
    assert [len(c[0].token_ids) for c in out] == [30] * len(PROMPTS)
    assert_same(out, reference)


def test_chunked_prefill_equals_unchunked(model, reference):
    e = engine(model, max_num_batched_tokens=7)
    out = e.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert e.stats.prefill_steps >= sum(len(p) for p in PROMPTS) // 7
    assert_same(out, reference)


def test_max_num_seqs_limits_the_batch_but_not_the_result(model, reference):
    assert_same(engine(model, max_num_seqs=3).generate(PROMPTS, GREEDY, use_tqdm=False), reference)


def test_request_that_can_never_fit_raises_up_front(model):
    e = engine(model, num_pages=4)
    with pytest.raises(ValueError, match="needs 9 KV pages but the cache has 4"):
        e.generate([list(range(1, 101))], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="max_model_len=256"):
        e.generate([[1] * 256], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="n=0"):
        e.generate([[1, 2]], GREEDY, n=0, use_tqdm=False)
    assert len(e.generate([[1, 2, 3]], GREEDY, use_tqdm=False)[0][0].token_ids) == 30


def test_stop_tokens_eos_and_length(model, reference):
    tokens = reference[3][0].token_ids
    stop = tokens[5]
    first = tokens.index(stop)
    out = engine(model).generate([PROMPTS[3]], SamplingParams(temperature=0, max_new_tokens=30, stop=[stop]),
                                 use_tqdm=False)[0][0]
    assert out.token_ids == tokens[: first + 1] and out.finish_reason == "stop"

    model.generation_config.eos_token_id = stop
    try:
        e = engine(model)
    finally:
        model.generation_config.eos_token_id = None
    stopped = e.generate([PROMPTS[3]], SamplingParams(temperature=0, max_new_tokens=30), use_tqdm=False)[0][0]
    assert stopped.token_ids == tokens[: first + 1] and stopped.finish_reason == "stop"
    ignored = e.generate([PROMPTS[3]], GREEDY, use_tqdm=False)[0][0]
    assert ignored.token_ids == tokens and ignored.finish_reason == "length"

    short = engine(model).generate([PROMPTS[3]], SamplingParams(temperature=0, max_new_tokens=3), use_tqdm=False)
    assert short[0][0].token_ids == tokens[:3] and short[0][0].finish_reason == "length"


def test_max_model_len_ends_generation(model):
    e = Engine.from_pretrained(model, config=EngineConfig(flow="dense", max_model_len=48, num_pages=16))
    out = e.generate([list(range(1, 41))], GREEDY, use_tqdm=False)[0][0]
    assert len(out.token_ids) == 8 and out.finish_reason == "length"


def test_seeded_sampling_does_not_depend_on_the_batch(model):
    params = SamplingParams(temperature=1.0, top_k=20, seed=123, max_new_tokens=12, ignore_eos=True)
    alone = engine(model).generate([PROMPTS[4]], params, n=2, use_tqdm=False)[0]
    batched = engine(model).generate([PROMPTS[0], PROMPTS[4]], [GREEDY, params], n=2, use_tqdm=False)[1]
    assert [c.token_ids for c in alone] == [c.token_ids for c in batched]
    other_seed = SamplingParams(temperature=1.0, top_k=20, seed=124, max_new_tokens=12, ignore_eos=True)
    assert engine(model).generate([PROMPTS[4]], other_seed, use_tqdm=False)[0][0].token_ids != alone[0].token_ids

"""Dense greedy decoding of the engine against ``transformers`` generate (float32, CPU).

Tolerances: tokens identical; per-token log-probs within 1e-4 of log_softmax of the HF logits.
"""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams, weight_checksum

PROMPTS = [[7], list(range(3, 18)), list(range(40, 57)), [(i * 37) % 300 + 1 for i in range(70)]]


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens of ``transformers`` generate and their log-probs (log_softmax of its logits)."""
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens)]
    return tokens, logprobs


@pytest.mark.parametrize("kind", ["qwen3", "qwen2", "llama"])
def test_tiny_models_match_transformers_greedy(make_tiny_hf_model, kind):
    model = make_tiny_hf_model(kind)
    engine = Engine.from_pretrained(model, config=EngineConfig(flow="dense", num_pages=64, max_model_len=256))
    params = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True)
    completions = engine.generate(PROMPTS, params, use_tqdm=False)
    for prompt, (completion,) in zip(PROMPTS, completions):
        tokens, logprobs = hf_greedy(model, prompt, 24)
        assert completion.token_ids == tokens
        assert completion.finish_reason == "length"
        torch.testing.assert_close(torch.tensor(completion.logprobs), torch.tensor(logprobs), atol=1e-4, rtol=0)


def test_tied_embeddings_share_one_parameter(make_tiny_hf_model):
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen2"), config=EngineConfig(flow="dense", num_pages=8,
                                                                                max_model_len=64))
    model = engine.runner.model
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_smollm2_gguf_matches_transformers_greedy(smollm_engine, smollm_hf):
    model, tokenizer = smollm_hf
    assert smollm_engine.arch.tie_word_embeddings and smollm_engine.arch.num_layers == 30
    assert smollm_engine.state_checksum() == pytest.approx(weight_checksum(model.named_parameters()), rel=1e-9)
    questions = ["What is the capital of France?", "Write a haiku about the sea.", "2 + 2 ="]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in questions]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    completions = smollm_engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16), use_tqdm=False)
    for prompt, (completion,) in zip(prompts, completions):
        tokens, logprobs = hf_greedy(model, prompt, 16)
        assert completion.token_ids == tokens
        torch.testing.assert_close(torch.tensor(completion.logprobs), torch.tensor(logprobs), atol=1e-4, rtol=0)
        assert completion.text == tokenizer.decode(tokens, skip_special_tokens=True)
        stopped = tokens[-1] in smollm_engine.eos_token_ids
        assert completion.finish_reason == ("stop" if stopped else "length")


def test_sampled_logprobs_are_those_of_the_sampling_distribution(make_tiny_hf_model):
    """Temperature 0.7, top-k 12, top-p 0.9: each sampled token's log-prob and the top-3 list equal
    log_softmax of the filtered, scaled logits of a teacher-forced transformers forward (1e-4)."""
    model = make_tiny_hf_model("llama")
    engine = Engine.from_pretrained(model, config=EngineConfig(flow="dense", num_pages=64, max_model_len=256))
    params = SamplingParams(temperature=0.7, top_k=12, top_p=0.9, max_new_tokens=16, ignore_eos=True, seed=4, logprobs=3)
    prompt = PROMPTS[1]
    for completion in engine.generate([prompt], params, n=2, use_tqdm=False)[0]:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1:-1].double()
        for step, (token, logprob, top) in enumerate(zip(completion.token_ids, completion.logprobs,
                                                         completion.top_logprobs)):
            scaled = logits[step] / 0.7
            kth = scaled.topk(12).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            probs = scaled.softmax(-1)
            order = probs.argsort(descending=True)
            before = probs[order].cumsum(0) - probs[order]
            drop = order[before >= 0.9]
            scaled[drop] = float("-inf")
            reference = scaled.log_softmax(-1)
            assert reference[token] > float("-inf")
            assert abs(logprob - reference[token].item()) < 1e-4
            ref_top = reference.topk(3)
            expected = {i: v for i, v in zip(ref_top.indices.tolist(), ref_top.values.tolist()) if v > float("-inf")}
            assert top.keys() == expected.keys()
            assert all(abs(top[i] - expected[i]) < 1e-4 for i in expected)

"""Sparse decode attention inside the engine.

- With a budget covering every page, block-sparse decode attends to exactly the dense set: same tokens,
  log-probs within 1e-5 of the dense engine.
- At budget 32 on SmolLM2 with a prompt of 1,500+ tokens, sparse decode only approximates dense: the
  test prints token agreement and the log-prob gaps, and bounds them by what was measured (see there).
"""

from __future__ import annotations

import inspect
import math
import textwrap

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.sparse import SparseConfig

PROMPTS = [list(range(1, 6)), list(range(2, 19)), [(i * 13) % 300 + 1 for i in range(150)]]


@pytest.mark.parametrize("flow", ["block_sparse_attention", "quest"])
def test_sparse_with_full_budget_equals_dense(make_tiny_hf_model, flow):
    model = make_tiny_hf_model("qwen3")
    params = SamplingParams(temperature=0, max_new_tokens=40, ignore_eos=True)
    runs = {}
    for name, config in {
        "dense": EngineConfig(flow="dense", num_pages=64, max_model_len=256),
        "sparse": EngineConfig(flow=flow, num_pages=64, max_model_len=256, sparse=SparseConfig(budget_pages=16)),
    }.items():
        runs[name] = [c[0] for c in Engine.from_pretrained(model, config=config).generate(PROMPTS, params, use_tqdm=False)]
    for dense, sparse in zip(runs["dense"], runs["sparse"]):
        assert sparse.token_ids == dense.token_ids
        torch.testing.assert_close(torch.tensor(sparse.logprobs), torch.tensor(dense.logprobs), atol=1e-5, rtol=0)


def test_small_budget_changes_attention_but_dense_layers_restore_it(make_tiny_hf_model):
    """Budget 4 pages on a 150-token prompt (10 pages) drops pages; dense_layers covering every layer
    brings back the dense result exactly."""
    model = make_tiny_hf_model("qwen3")
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True)
    prompt = [PROMPTS[2]]

    def run(sparse):
        config = EngineConfig(num_pages=64, max_model_len=256, sparse=sparse)
        return Engine.from_pretrained(model, config=config).generate(prompt, params, use_tqdm=False)[0][0]

    dense = Engine.from_pretrained(model, config=EngineConfig(flow="dense", num_pages=64, max_model_len=256))
    reference = dense.generate(prompt, params, use_tqdm=False)[0][0]
    small = run(SparseConfig(budget_pages=4))
    all_dense = run(SparseConfig(budget_pages=4, dense_layers=(0, 1)))
    assert max(abs(a - b) for a, b in zip(small.logprobs, reference.logprobs)) > 1e-3
    assert all_dense.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(all_dense.logprobs), torch.tensor(reference.logprobs), atol=1e-5, rtol=0)


def test_smollm2_sparse_budget_32_long_prompt(smollm_engine, smollm_hf):
    model, tokenizer = smollm_hf
    source = textwrap.dedent(inspect.getsource(textwrap))
    question = "Explain what the following Python module does.\n\n" + source[:5600]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    prompt = prompt if isinstance(prompt, list) else prompt["input_ids"]
    assert len(prompt) > 1500
    params = SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True)
    sparse_engine = Engine.from_pretrained(model, tokenizer=tokenizer, config=EngineConfig(
        flow="block_sparse_attention", sparse=SparseConfig(page_size=16, budget_pages=32), num_pages=160,
        max_model_len=2048, dtype="float32", device="cpu"))
    dense = smollm_engine.generate([prompt], params, use_tqdm=False)[0][0]
    sparse = sparse_engine.generate([prompt], params, use_tqdm=False)[0][0]
    agree = sum(a == b for a, b in zip(dense.token_ids, sparse.token_ids)) / len(dense.token_ids)
    # Log-probs compared position by position while the two greedy paths still agree.
    prefix = next((i for i, (a, b) in enumerate(zip(dense.token_ids, sparse.token_ids)) if a != b), 6)
    gaps = [abs(a - b) for a, b in zip(dense.logprobs[: prefix + 1], sparse.logprobs[: prefix + 1])]
    mean_gap = sum(gaps) / len(gaps)
    print(f"\nSmolLM2 prompt {len(prompt)} tokens ({math.ceil(len(prompt) / 16)} pages), budget 32 pages: "
          f"token agreement {agree:.2f}, common prefix {prefix} tokens, mean |logprob gap| {mean_gap:.4f}, "
          f"max {max(gaps):.4f}")
    assert all(math.isfinite(x) and x <= 0 for x in sparse.logprobs)
    # The first token is sampled from the prefill, which is dense in both engines.
    assert sparse.token_ids[0] == dense.token_ids[0] and gaps[0] < 1e-4
    # Measured (CPU, float32; the same to 5 decimals at 1 and 2 threads, greedy decoding has no run-to-run
    # noise): this prompt agrees on 6/6 tokens, gaps 0, .197, .263, .002, .005, .292 (mean .126), and
    # 12/12 tokens with every gap <= .37 on the same module cut at 5,400 and 5,800 characters. Other
    # 1,500-1,730-token prompts (json.decoder, shlex, heapq sources) agree on 1/6 to 6/6 tokens with mean
    # gaps .02-.07 and every gap <= .26. Bounds: one token of slack, gaps under 2x the largest measured.
    assert agree >= 5 / 6, f"sparse decode left the dense greedy path: {dense.token_ids} vs {sparse.token_ids}"
    assert max(gaps) <= 0.6 and mean_gap <= 0.25, gaps
    assert mean_gap > 1e-3, "budget 32 of 96 pages should change the log-probs: is decode still sparse?"

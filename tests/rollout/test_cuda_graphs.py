"""Decode batches as the CUDA graphs run them: padded to a captured size, full page-table width.

The padding test runs everywhere (eagerly); the graph tests need CUDA and are skipped without it.
"""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.sparse import SparseConfig

PROMPTS = [list(range(1, 70)), [3, 4, 5], list(range(50, 90))]
GREEDY = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_padded_rows_and_full_width_leave_real_rows_unchanged(make_tiny_hf_model):
    """Rows padded onto the scratch page and a page table as wide as max_model_len (what a graph
    replays) give the same hidden states as the exact eager batch."""
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        num_pages=64, max_model_len=128, sparse=SparseConfig(budget_pages=4)))
    for i, prompt in enumerate(PROMPTS):
        engine._add_request(i, prompt, GREEDY, 1)
    engine.step()  # prefill all three
    batch = engine.scheduler.schedule()
    assert not batch.is_prefill and len(batch.seqs) == 3
    runner = engine.runner
    with torch.inference_mode():
        exact = runner._run_decode(batch)
        host = runner.decode_inputs(batch, 8, runner.max_pages_per_seq)
        dtypes = {"page_table": torch.int32, "seq_lens": torch.int32}
        padded = runner.decode_forward({k: torch.as_tensor(v, dtype=dtypes.get(k, torch.long)) for k, v in host.items()})
    assert (host["page_table"][3:, 0] == runner.scratch_page).all()
    torch.testing.assert_close(padded[:3], exact, atol=1e-5, rtol=1e-5)  # matmul shapes differ: fp32 rounding only


def generate(model, **kw):
    config = EngineConfig(num_pages=64, max_model_len=128, dtype="float32", sparse=SparseConfig(budget_pages=4), **kw)
    engine = Engine.from_pretrained(model, config=config)
    return engine, [c[0] for c in engine.generate(PROMPTS, GREEDY, use_tqdm=False)]


@needs_cuda
def test_graph_replay_equals_eager_decode(make_tiny_hf_model):
    model = make_tiny_hf_model("qwen3").cuda()
    _, eager = generate(model, enforce_eager=True)
    engine, graphed = generate(model, cuda_graph_batch_sizes=(1, 2, 4))
    assert engine.runner.graphs is not None and sorted(engine.runner.graphs.graphs) == [1, 2, 4]
    for a, b in zip(eager, graphed):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


@needs_cuda
def test_batches_larger_than_every_graph_run_eagerly_and_wake_recaptures(make_tiny_hf_model):
    model = make_tiny_hf_model("qwen3").cuda()
    _, eager = generate(model, enforce_eager=True)
    engine, small_graphs = generate(model, cuda_graph_batch_sizes=(1, 2))
    engine.sleep()
    engine.wake()
    again = [c[0] for c in engine.generate(PROMPTS, GREEDY, use_tqdm=False)]
    for a, b, c in zip(eager, small_graphs, again):
        assert a.token_ids == b.token_ids == c.token_ids

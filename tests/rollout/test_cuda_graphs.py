"""Decode batches as the CUDA graphs run them: padded to a captured size, full page-table width.

The padding and static-buffer tests run everywhere (eagerly); the graph tests need CUDA and are skipped
without it.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.cuda_graphs import DecodeGraphs
from vortex_rl.sparse import SparseConfig

PROMPTS = [list(range(1, 70)), [3, 4, 5], list(range(50, 90))]
GREEDY = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_padded_rows_and_full_width_leave_real_rows_unchanged(make_tiny_hf_model):
    """Rows padded onto the scratch page and a page table as wide as max_model_len (what a graph
    replays) give the same logits as the exact eager batch."""
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        num_pages=64, max_model_len=128, sparse=SparseConfig(budget_pages=4), dtype="float32", enforce_eager=True))
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(prompt, GREEDY, prompt_index=i)
    engine.step()  # prefill all three
    engine.flush()  # their first tokens read (overlap scheduling leaves them in flight)
    batch = engine.scheduler.schedule()
    assert not batch.is_prefill and len(batch.seqs) == 3
    runner = engine.runner
    assert runner.graphs is None  # enforce_eager: run() decodes exactly the batch's rows and width
    with torch.inference_mode():
        exact = runner.run(batch)
        host = runner.decode_inputs(batch, 8, runner.max_pages_per_seq)
        dtypes = {"page_table": torch.int32, "seq_lens": torch.int32}
        padded = runner.decode_forward({k: torch.as_tensor(v, dtype=dtypes.get(k, torch.long), device=runner.device)
                                        for k, v in host.items()})
        padded_logits = runner.model.compute_logits(padded)
    assert padded.shape[0] == 8 and (host["page_table"][3:, 0] == runner.scratch_page).all()
    # The matmul shapes differ: fp32 rounding only.
    torch.testing.assert_close(padded_logits[:3], exact, atol=1e-5, rtol=1e-5)


def test_static_buffers_take_each_batch_like_its_eager_inputs(make_tiny_hf_model):
    """``DecodeGraphs.replay`` writes a step into its static buffers (padding rows, clearing the page-table
    columns a wider earlier step left) so that the forward over them equals the eager forward of the
    batch. Without CUDA nothing is captured: a stand-in graph runs the forward on the buffers."""
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        num_pages=64, max_model_len=128, sparse=SparseConfig(budget_pages=4), dtype="float32", enforce_eager=True))
    runner = engine.runner
    graphs = DecodeGraphs(runner.decode_forward, (1, 2, 4), max_pages_per_seq=runner.max_pages_per_seq,
                          scratch_page=runner.scratch_page, page_size=runner.page_size, device=runner.device)

    class ForwardOnBuffers:  # what a captured graph does on replay
        def __init__(self, rows):
            self.rows = rows

        def replay(self):
            graphs.outputs[self.rows] = graphs.forward({k: b[: self.rows] for k, b in graphs.buffers.items()})

    graphs.graphs = {rows: ForwardOnBuffers(rows) for rows in graphs.batch_sizes}
    assert [graphs.rows_for(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 4] and not graphs.fits(5)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(prompt, GREEDY, prompt_index=i)
    engine.step()  # prefill all three
    engine.flush()  # their first tokens read (overlap scheduling leaves them in flight)
    dtypes = {"page_table": torch.int32, "seq_lens": torch.int32}
    with torch.inference_mode():
        for batch in (engine.scheduler.schedule(), None):
            if batch is None:  # then only the shortest prompt: 1 page where the first step had 5
                batch = engine.scheduler.schedule()
                batch.seqs, batch.chunk_lens = batch.seqs[1:2], [1]
            n, width = len(batch.seqs), max(len(seq.page_table) for seq in batch.seqs)
            got = graphs.replay(runner.decode_inputs(batch, graphs.rows_for(n), width), n)
            host = runner.decode_inputs(batch, n, width)
            exact = runner.decode_forward({k: torch.as_tensor(v, dtype=dtypes.get(k, torch.long), device=runner.device)
                                           for k, v in host.items()})
            assert got.shape == exact.shape == (n, runner.arch.hidden_size)
            torch.testing.assert_close(got, exact, atol=1e-5, rtol=1e-5)
    assert (graphs.buffers["page_table"][:1, 1:] == -1).all()


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


def test_no_size_to_capture_runs_every_batch_eagerly(make_tiny_hf_model):
    """``cuda_graph_batch_sizes`` all above ``max_num_seqs`` leave no size to capture: the config documents
    that batches then run eagerly, but building the graphs indexed the empty tuple (IndexError on CUDA)."""
    config = EngineConfig(max_num_seqs=2, cuda_graph_batch_sizes=(4, 8))
    assert config.graph_batch_sizes() == ()
    graphs = DecodeGraphs(lambda inputs: inputs["input_ids"], config.graph_batch_sizes(), max_pages_per_seq=4,
                          scratch_page=0, page_size=16, device=torch.device("cpu"))
    assert not graphs.fits(1) and graphs.buffers["page_table"].shape == (0, 4)


class _OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# Ops a CUDA-graph capture refuses or bakes in: a read of a device value on the host (a sync), and a tensor
# built from host data (``torch.tensor``: a pageable host-to-device copy, not capturable).
_NOT_CAPTURABLE = {"_local_scalar_dense", "item", "nonzero", "equal", "is_nonzero", "lift_fresh", "lift_fresh_copy"}


@pytest.mark.parametrize("flow,schedule", [("block_sparse_attention", ((64, 4),)), ("block_sparse_attention", None),
                                           ("dense", None)])
def test_the_captured_decode_step_has_no_host_sync(make_tiny_hf_model, flow, schedule):
    """What ``DecodeGraphs.capture`` records, second call after the warm-up, with the Triton launchers it
    would capture (recorded, not run): the whole step (plan, every layer, the budget schedule's buffers)
    must be device ops only, or the first capture on a GPU fails."""
    pytest.importorskip("triton")
    from vortex_rl.kernels._triton import record_launches

    sparse = SparseConfig(budget_pages=4, budget_schedule=schedule, max_budget_pages=6)
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        flow=flow, num_pages=32, max_model_len=128, sparse=sparse, dtype="float32", kernel_backend="triton"))
    runner = engine.runner
    graphs = DecodeGraphs(runner.decode_forward, (4,), max_pages_per_seq=runner.max_pages_per_seq,
                          scratch_page=runner.scratch_page, page_size=runner.page_size, device=runner.device)
    graphs.buffers["page_table"][:, 0] = graphs.scratch_page
    with torch.inference_mode(), record_launches(run=False) as launches:
        graphs._forward(4)  # the warm-up: lazily built tensors (the schedule's buffers) are made here
        before, ops = len(launches), _OpNames()
        with ops:
            graphs._forward(4)
    assert not set(ops.names) & _NOT_CAPTURABLE, sorted(set(ops.names) & _NOT_CAPTURABLE)
    per_layer = (len(launches) - before) / runner.arch.num_layers
    assert per_layer == (2 if flow == "dense" else 3)  # append (+ indexer) + attention, the Triton kernels

"""Exact preemption: rollouts do not depend on the size of the KV pool.

The same seeded sampling workload (several prompts, ``n=3`` samples sharing each prompt's pages,
temperature 0.8, top log-probs on) runs once with a pool that never preempts and once with a pool so
small that many sequences are swapped out and back in. Token ids must match exactly and log-probs to
1e-4: what is left (2e-6 measured, CPU float32) comes from decode batches of different sizes, not from
the swap, which copies bytes. Before swapping, block-sparse samples recomputed by dense prefill left
their path (8 of 12 samples diverged, log-probs off by up to 1.9 nats before the first divergence).
"""

from __future__ import annotations

import pytest
import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.memory import GIB
from vortex_rl.rollout.sequence import Sequence
from vortex_rl.sparse import SparseConfig

PROMPTS = [[(i * 11 + j * 7) % 300 + 1 for j in range(length)] for i, length in enumerate([20, 33, 9, 48])]
PARAMS = SamplingParams(temperature=0.8, max_new_tokens=40, ignore_eos=True, logprobs=2, seed=7)
# Pages of 8 tokens and a budget of 3: a sequence of 29-88 tokens attends to a fraction of its 4-11 pages.
SPARSE = SparseConfig(page_size=8, budget_pages=3, sink_pages=1, local_pages=1)
ROOMY, TIGHT = 256, 16  # the workload peaks at 76 pages; its longest request needs 11
N = 3
# On CUDA: float32 like the CPU runs, decode through captured CUDA graphs, swaps through pinned memory.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.fixture(scope="module")
def model(make_tiny_hf_model):
    return make_tiny_hf_model("qwen3")


def build(model, flow: str, num_pages: int, device: str = "cpu", **kw) -> Engine:
    config = EngineConfig(flow=flow, sparse=SPARSE, num_pages=num_pages, max_model_len=128, dtype="float32",
                          device=device, **kw)
    return Engine.from_pretrained(model, config=config)


@pytest.fixture(scope="module")
def runs(model):
    """``runs(flow, num_pages, device) -> (completions, stats)``, each run once per module."""
    done = {}

    def run(flow, num_pages, device="cpu"):
        key = flow, num_pages, device
        if key not in done:
            engine = build(model, flow, num_pages, device)
            done[key] = engine.generate(PROMPTS, PARAMS, n=N, use_tqdm=False), engine.stats
        return done[key]

    return run


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flow", ["block_sparse_attention", "dense"])
def test_rollouts_do_not_depend_on_the_kv_pool(runs, flow, device):
    roomy, roomy_stats = runs(flow, ROOMY, device)
    tight, stats = runs(flow, TIGHT, device)
    assert roomy_stats.preemptions == 0 and roomy_stats.peak_pages > TIGHT
    assert stats.preemptions > 0 and stats.peak_pages <= TIGHT
    for group_a, group_b in zip(roomy, tight):
        assert len({tuple(c.token_ids) for c in group_a}) == N  # really sampling: the samples differ
        for a, b in zip(group_a, group_b):
            assert b.token_ids == a.token_ids
            torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=1e-4, rtol=0)
            for top_a, top_b in zip(a.top_logprobs, b.top_logprobs):
                assert top_b.keys() == top_a.keys()
                torch.testing.assert_close(torch.tensor(list(top_b.values())), torch.tensor(list(top_a.values())),
                                           atol=1e-4, rtol=0)
    assert stats.swapped_pages >= stats.preemptions and stats.peak_swapped_pages > 0
    assert stats.pages_in_use == 0 and stats.as_dict()["preemptions"] == stats.preemptions


def test_the_workload_is_really_sparse(runs):
    """Otherwise the block-sparse case above would only test dense attention again."""
    dense, _ = runs("dense", ROOMY)
    sparse, _ = runs("block_sparse_attention", ROOMY)
    gaps = []
    for a, b in zip(dense[0], sparse[0]):
        # compared up to the first token where the two paths part (that token's log-prob included)
        same = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), len(a.token_ids))
        gaps += [abs(x - y) for x, y in zip(a.logprobs[: same + 1], b.logprobs[: same + 1])]
    assert max(gaps) > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_swap_copies_every_layer_and_the_flow_state_bit_for_bit(model, device):
    engine = build(model, "block_sparse_attention", 12, device)
    runner, kv = engine.runner, engine.runner.kv
    assert set(kv) == {"k", "v", "centroids"}
    generator = torch.Generator().manual_seed(0)
    for t in kv.values():
        t.copy_(torch.randn(t.shape, generator=generator))
    before = {name: t.clone() for name, t in kv.items()}
    seq = Sequence(0, [1] * 20, SamplingParams(), seed=0, prompt_index=0, sample_index=0, max_pages=16)
    src, dst = [3, 5, 1], [7, 2, 9]
    runner.swap_out(seq, src)
    assert {name: tuple(h.shape[:2]) for name, h in seq.host_kv.items()} == {n: (2, 3) for n in kv}
    assert all(h.device.type == "cpu" and h.is_pinned() == (device == "cuda") for h in seq.host_kv.values())
    for t in kv.values():
        # A new owner writes the pages while the sequence is out: with no synchronisation here, stream
        # order alone must keep the (non-blocking) copy-out ahead of these writes.
        t[:, src] = -1.0
    reused = {name: t.clone() for name, t in kv.items()}
    runner.swap_in(seq, dst)
    assert seq.host_kv is None
    others = [p for p in range(runner.num_pages + 1) if p not in dst]
    for name, t in kv.items():
        assert torch.equal(t[:, dst], before[name][:, src]), name
        assert torch.equal(t[:, others], reused[name][:, others]), name
    with pytest.raises(ValueError, match="host pages None do not match 3 device pages"):
        runner.swap_in(seq, dst)


def test_swap_space_is_sized_from_the_page_bytes(model):
    engine = build(model, "block_sparse_attention", 12, swap_space_gb=0.5)
    assert engine.swap.capacity_pages == int(0.5 * GIB // engine.runner.page_bytes()) > 0


def test_a_full_swap_space_raises_and_leaves_the_engine_usable(model):
    engine = build(model, "block_sparse_attention", TIGHT, swap_space_gb=0)
    with pytest.raises(RuntimeError, match=r"host pages but the swap space has 0 of 0 left \(swap_space_gb=0\)"):
        engine.generate(PROMPTS, PARAMS, n=N, use_tqdm=False)
    assert not engine.scheduler.has_work() and engine.pages.num_used == 0 and engine.swap.num_used == 0
    out = engine.generate([PROMPTS[2]], PARAMS, use_tqdm=False)[0][0]
    assert len(out.token_ids) == PARAMS.max_new_tokens and engine.stats.preemptions == 0

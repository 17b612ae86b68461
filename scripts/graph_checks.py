"""CUDA-graph decode against eager decode in the engine (``gpu_check.py``'s second phase).

The engine's decode under CUDA graphs must compute what eager decode does: for batches that land in
different graph buckets, greedy log-probs within ``GRAPH_LOGPROB_TOL`` up to and including the first
step where the ids differ (:func:`greedy_agreement`: padded buckets round bf16 differently, which can
flip a near-tie of a random model); and one decode step replayed against the same padded inputs run
eagerly (:func:`replay_vs_eager`: same kernels, same shapes, ``GRAPH_REPLAY_TOL``). With ``smoke=True`` it runs a tiny fp32 model on the CPU (no graphs there; the
replay check is tested with a stand-in for the captured graphs).
"""

from __future__ import annotations

import gc
import traceback

import torch

# Greedy log-probs, graphs vs eager: a bucket pads the batch, so the GEMMs see other row counts and cuBLAS
# may pick another algorithm; bf16 rounding then differs by ulps through 28 layers. A stale buffer or a
# host value baked into a graph is off by O(1).
GRAPH_LOGPROB_TOL = 2e-2
# Replay vs eager on identical padded inputs: 0 expected; a bf16 ulp of slack in case cuBLAS picks another
# GEMM algorithm under capture. A stale buffer or a host value baked into a graph is off by O(1).
GRAPH_REPLAY_TOL = 1e-2


def check_graphs(device: torch.device, smoke: bool) -> list[dict]:
    """Greedy decode with CUDA graphs vs eager, batches in several graph buckets, both flows."""
    from bench_rollout import random_source

    from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
    from vortex_rl.sparse import SparseConfig

    model = "tiny" if smoke else "qwen3-0.6b"
    # Contexts stay within 128 tokens (prompts < 80): 8 pages, two blocks of the bf16 decode kernel, one
    # split whatever the page-table width. Past that the graph (full-width table: more splits) and eager
    # decode (the batch's width: fewer) sum attention in another order, and greedy ids of a random model
    # drift apart on bf16 rounding alone. The GEMMs still see other row counts (a bucket's padding):
    # ``replay_vs_eager`` is the exact check.
    gen_len = 8 if smoke else 48
    batches = (1, 3) if smoke else (1, 3, 8, 17, 40)  # several graph buckets, padded rows included
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    prompts = {b: [torch.randint(1, 400, (int(torch.randint(20, 80, (1,), generator=gen)),), generator=gen).tolist()
                   for _ in range(b)] for b in batches}
    params = SamplingParams(temperature=0.0, max_new_tokens=gen_len, ignore_eos=True, logprobs=1)
    rows = []
    for flow in ("dense", "block_sparse_attention"):
        outputs: dict[tuple[bool, int], list] = {}
        for eager in (True, False):  # one engine each (graph capture is the slow part), every batch through it
            config = EngineConfig(flow=flow, sparse=SparseConfig(page_size=16, budget_pages=4), max_num_seqs=64,
                                  max_model_len=256, device=str(device), enforce_eager=eager,
                                  kv_cache_memory_gb=None if device.type == "cuda" else 0.05,
                                  gpu_memory_utilization=0.3, seed=0)
            engine = Engine(random_source(model, device, dtype, 0), config)
            for b in batches:
                outputs[eager, b] = [group[0] for group in engine.generate(prompts[b], params, n=1, use_tqdm=False)]
            for b in batches if engine.runner.graphs is not None else ():
                row = {"flow": flow, "batch": b, "check": "replay_vs_eager"}
                try:
                    row["max_logit_diff"] = replay_vs_eager(engine, prompts[b])
                    row["ok"] = row["max_logit_diff"] <= GRAPH_REPLAY_TOL
                except Exception as e:  # noqa: BLE001 - recorded: the generation rows above still count
                    row.update(error=f"{type(e).__name__}: {e}", ok=False)
                    traceback.print_exc()
                rows.append(row)
            del engine
            gc.collect()  # runner -> graphs -> runner.decode_forward is a cycle: free the cache and graphs now
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for b in batches:
            pairs = [greedy_agreement(x.token_ids, x.logprobs, y.token_ids, y.logprobs)
                     for x, y in zip(outputs[True, b], outputs[False, b])]
            diverged = [step for step, _ in pairs if step is not None]
            worst = max(w for _, w in pairs)
            rows.append({"flow": flow, "batch": b, "graphs": device.type == "cuda", "ids_equal": not diverged,
                         "first_divergence": min(diverged) if diverged else None, "max_logprob_diff": worst,
                         "ok": worst <= GRAPH_LOGPROB_TOL})
    return rows


def greedy_agreement(ids_a: list[int], logprobs_a: list[float], ids_b: list[int],
                     logprobs_b: list[float]) -> tuple[int | None, float]:
    """``(first step where the ids differ or None, max |log-prob difference|)`` of two greedy runs of one
    prompt, compared up to and including that step.

    A greedy token's log-prob is the step's largest, which rounding moves only a little even where it
    flips the argmax of a near-tie; past the flip the two contexts differ, so later steps say nothing.
    Equal ids with close log-probs, or a flip between near-equal tokens, agree; a graph that computes
    something else differs by O(1) at the latest where it first diverges."""
    steps = min(len(ids_a), len(ids_b))
    first = next((t for t in range(steps) if ids_a[t] != ids_b[t]), None)
    upto = steps if first is None else first + 1
    worst = max((abs(u - v) for u, v in zip(logprobs_a[:upto], logprobs_b[:upto])), default=0.0)
    return first, worst


def replay_vs_eager(engine, prompts: list[list[int]]) -> float:
    """Max |logit| difference of one decode step of ``prompts`` (after their prefill) replayed in its CUDA
    graph and run eagerly on the same padded, full-width inputs; the requests are aborted afterwards."""
    from vortex_rl.rollout import SamplingParams

    runner, greedy = engine.runner, SamplingParams(temperature=0.0, max_new_tokens=4, ignore_eos=True)
    seqs = [engine.add_request(prompt, greedy, prompt_index=i)[0] for i, prompt in enumerate(prompts)]
    try:
        while any(not seq.completion_ids for seq in seqs):
            engine.step()  # the prefills (one step when they fit one chunk), each request's first token
        engine.flush()  # read those tokens: the batch below is fed from the host
        batch = engine.scheduler.schedule()
        if batch.is_prefill or not batch.seqs:
            raise RuntimeError(f"replay_vs_eager: expected a decode step of {len(prompts)} requests, got "
                               f"{'a prefill' if batch.is_prefill else 'none'}")
        n = len(batch.seqs)
        host = runner.decode_inputs(batch, runner.graphs.rows_for(n), runner.max_pages_per_seq)
        dtypes = {"page_table": torch.int32, "seq_lens": torch.int32}
        with torch.inference_mode():  # the static buffers are inference tensors
            graphed = runner.model.compute_logits(runner.graphs.replay(host, n))
            inputs = {k: torch.as_tensor(v, dtype=dtypes.get(k, torch.long), device=runner.device)
                      for k, v in host.items()}
            eager = runner.model.compute_logits(runner.decode_forward(inputs)[:n])
        return float((graphed - eager).abs().max())
    finally:
        engine.abort_all()
        engine.collect_finished()

"""The attention path of a CPU decode step, without the model: every layer's cache write, page selection
and attention, for each flow, through the engine's ``FlowRunner`` on the CPU kernel set.

A whole decode step (``bench_rollout.py --smollm2``) adds the projections and the LM head, about 30 ms
of the 40-50 ms a SmolLM2 step takes at one request, and on a shared 2-core machine their timing varies by
up to 1.5x between runs. This times only what the flows change, at SmolLM2-135M's attention geometry by
default (30 layers, 9 query heads, 3 KV heads, head_dim 64, float32, page 16, budget 32), each layer with
its own cache so that layers read memory as in a step. The flows take turns within every repeat, so slow
spells of the machine hit them alike; the table gives the median and the fastest repeat.

Usage: ``python scripts/bench_cpu_attention.py [--cases 1x2048 1x8192 4x2048] [--repeats 30]
[--out bench_results/bench_cpu_attention.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vortex_rl.sparse import FlowRunner, SparseConfig  # noqa: E402

FLOWS = ("dense", "block_sparse_attention")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["1x2048", "1x8192", "4x2048"], help="batch x context")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--q-heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--budget-pages", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30, help="timed steps per flow (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--kernel-backend", default="cpu", help="'torch': the references, for comparison")
    p.add_argument("--out", default="bench_results/bench_cpu_attention.json")
    return p.parse_args(argv)


class Setup:
    """One flow's runner and ``layers`` caches holding ``batch`` requests of ``context`` tokens (pages
    interleaved across requests, as decode growth deals them), and one decode step's inputs."""

    def __init__(self, flow: str, batch: int, context: int, args: argparse.Namespace, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        ps = args.page_size
        self.runner = FlowRunner(flow, SparseConfig(page_size=ps, budget_pages=args.budget_pages),
                                 num_q_heads=args.q_heads, num_kv_heads=args.kv_heads, head_dim=args.head_dim,
                                 kernel_backend=args.kernel_backend)
        pages = context // ps + 1  # room for the step's token
        num_pages = batch * pages
        self.table = torch.arange(num_pages, dtype=torch.int32).view(pages, batch).t().contiguous()
        every_slot = (self.table.long()[:, :, None] * ps + torch.arange(ps)).flatten()
        shape = (num_pages, args.kv_heads, ps, args.head_dim)
        self.caches = []
        for _ in range(args.layers):
            cache = {"k": torch.randn(shape, generator=gen), "v": torch.randn(shape, generator=gen)}
            cache.update(self.runner.allocate_state(num_pages, dtype=torch.float32, device="cpu"))
            self.runner.update_state(cache, every_slot)
            self.caches.append(cache)
        self.seq_lens = torch.full((batch,), context + 1, dtype=torch.int32)  # the step's token included
        self.loc = self.table.long()[:, context // ps] * ps + context % ps
        self.q = torch.randn(batch, args.q_heads, args.head_dim, generator=gen)
        self.k = torch.randn(batch, args.kv_heads, args.head_dim, generator=gen)
        self.v = torch.randn(batch, args.kv_heads, args.head_dim, generator=gen)

    def step(self) -> list[torch.Tensor]:
        """One decode step's attention path, all layers, as the engine runs it (plan once, then per layer);
        every layer's output ``[batch, q_heads, head_dim]``. The step's token is written to the same slot
        each time, so every step reads the same cache."""
        ctx = self.runner.plan(self.table, self.seq_lens)
        outputs = []
        for layer, cache in enumerate(self.caches):
            self.runner.write(self.k, self.v, cache, self.loc, ctx)
            outputs.append(self.runner.decode(self.q, cache, ctx, layer=layer)[0])
        return outputs

    def step_ms(self) -> float:
        start = time.perf_counter()
        self.step()
        return (time.perf_counter() - start) * 1e3


def run_case(batch: int, context: int, args: argparse.Namespace) -> dict:
    setups = {flow: Setup(flow, batch, context, args) for flow in FLOWS}
    times = {flow: [] for flow in FLOWS}
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            for flow, setup in setups.items():  # turns within a repeat: slow spells hit both flows
                ms = setup.step_ms()
                if i >= args.warmup:
                    times[flow].append(ms)
    row = {"batch": batch, "context": context}
    for flow, ts in times.items():
        row[flow] = {"median_ms": statistics.median(ts), "min_ms": min(ts)}
    row["dense_over_sparse_median"] = row["dense"]["median_ms"] / row["block_sparse_attention"]["median_ms"]
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = {"device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args), "cases": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        batch, context = (int(x) for x in case.lower().split("x"))
        row = run_case(batch, context, args)
        row["load_avg_after"] = os.getloadavg()[0]
        report["cases"].append(row)
        out.write_text(json.dumps(report, indent=2))  # as it goes
        print(f"{batch} x {context}: dense {row['dense']['median_ms']:.2f} ms, block-sparse "
              f"{row['block_sparse_attention']['median_ms']:.2f} ms (median of {args.repeats})", flush=True)
    print(f"\n{report['device']}  threads {report['threads']}  kernels {args.kernel_backend}  {args.layers} layers  "
          f"heads {args.q_heads}/{args.kv_heads} x {args.head_dim}  page {args.page_size}  budget {args.budget_pages}")
    print(f"{'case':<10}{'dense med':>11}{'dense min':>11}{'sparse med':>12}{'sparse min':>12}{'dense/sparse':>14}"
          f"{'load':>7}")
    for r in report["cases"]:
        d, s = r["dense"], r["block_sparse_attention"]
        print(f"{str(r['batch']) + 'x' + str(r['context']):<10}{d['median_ms']:>11.2f}{d['min_ms']:>11.2f}"
              f"{s['median_ms']:>12.2f}{s['min_ms']:>12.2f}{r['dense_over_sparse_median']:>14.2f}"
              f"{r['load_avg_after']:>7.2f}")
    print(f"written: {out}")
    return report


if __name__ == "__main__":
    main()

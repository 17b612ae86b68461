"""How much dense attention mass each flow's pages capture, on a random long sequence.

``python -m vortex_rl.sparse.demo [--tokens 8192] [--budgets 8 16 32]``

Keys get a slowly drifting direction plus noise and the query leans toward a few random "topic" pages,
so some pages matter much more than others (as in real long reasoning traces). The table shows, per flow
and budget, the share of the dense softmax mass that falls on the selected pages (1.0 = lossless).
"""

from __future__ import annotations

import argparse

import torch

from vortex_rl.sparse import SparseConfig, list_flows, run_flow


def make_sequence(tokens: int, *, kv_heads: int, group: int, head_dim: int, page_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    pages = (tokens + page_size - 1) // page_size
    topics = torch.randn(pages, kv_heads, head_dim, generator=gen)
    keys = topics.repeat_interleave(page_size, 0)[:tokens] + 0.7 * torch.randn(tokens, kv_heads, head_dim, generator=gen)
    hot = torch.randperm(pages, generator=gen)[:6]
    q = topics[hot].sum(0).repeat_interleave(group, 0) * 0.5 + 0.5 * torch.randn(kv_heads * group, head_dim, generator=gen)
    k_cache = torch.zeros(pages, kv_heads, page_size, head_dim)
    k_cache.view(pages * page_size, kv_heads, head_dim)[:tokens] = keys
    v_cache = torch.randn(pages, kv_heads, page_size, head_dim, generator=gen)
    page_table = torch.arange(pages, dtype=torch.int32)[None, :]
    return q[None], k_cache, v_cache, page_table, torch.tensor([tokens], dtype=torch.int32)


def captured_mass(q, k_cache, page_table, seq_lens, pages) -> float:
    """Share of dense softmax probability on the selected pages, averaged over query heads."""
    tokens, (num_pages, kv_heads, page_size, head_dim) = int(seq_lens[0]), k_cache.shape
    keys = k_cache.view(num_pages * page_size, kv_heads, head_dim)[:tokens]
    group = q.shape[1] // kv_heads
    shares = []
    for h in range(q.shape[1]):
        probs = torch.softmax(keys[:, h // group] @ q[0, h] / head_dim**0.5, 0)
        mask = torch.zeros(tokens, dtype=torch.bool)
        for p in pages[0, h // group].tolist():
            if p >= 0:
                mask[p * page_size : (p + 1) * page_size] = True
        shares.append(float(probs[mask].sum()))
    return sum(shares) / len(shares)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    q, k_cache, v_cache, page_table, seq_lens = make_sequence(
        args.tokens, kv_heads=2, group=4, head_dim=64, page_size=16, seed=args.seed
    )
    flows = [f for f in list_flows() if f != "dense"]
    print(f"context {args.tokens} tokens ({page_table.shape[1]} pages of 16); share of dense attention mass captured")
    print(f"{'flow':<26}" + "".join(f"{'budget ' + str(b):>12}" for b in args.budgets))
    for flow in flows:
        row = []
        for budget in args.budgets:
            _, _, pages = run_flow(flow, q, k_cache, v_cache, page_table, seq_lens, SparseConfig(budget_pages=budget))
            row.append(captured_mass(q, k_cache, page_table, seq_lens, pages))
        print(f"{flow:<26}" + "".join(f"{m:>12.3f}" for m in row))


if __name__ == "__main__":
    main()

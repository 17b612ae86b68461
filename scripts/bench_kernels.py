"""Decode-attention kernels against torch, per layer, at the Qwen3-0.6B attention shape.

For each batch size and context length it times (CUDA graphs of several calls, CUDA-event timing,
after warm-up) and checks against each other:

- dense paged decode (Triton) vs ``F.scaled_dot_product_attention`` on a contiguous cache;
- the sparse path, block-sparse indexer + sparse paged decode (Triton), vs the torch indexer
  reference + a gather of the selected pages + SDPA; the indexers alone as well;
- a large ``torch`` copy, whose bandwidth is the yardstick of the "% copy" column.

Effective bandwidth counts the bytes an op must read: all K/V for dense; the selected pages' K/V plus
every page's centroid for the sparse path. Targets (batch 32, 16K context; the sparse path's time is the
H100's, or the H200's on an H200: :func:`targets_for`) are checked last.
Without CUDA (or with ``--cpu-smoke``) it runs tiny shapes through Triton's interpreter, so the
script stays exercised.

Usage: ``python scripts/bench_kernels.py [--batches 32 64] [--contexts 4096 8192 16384 32768]
[--out bench_results/bench_kernels.json] [--cpu-smoke]``
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

CPU_SMOKE = "--cpu-smoke" in sys.argv or not torch.cuda.is_available()
if CPU_SMOKE:  # before anything imports Triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vortex_rl import kernels  # noqa: E402

TARGETS = {"batch": 32, "context": 16384, "dense_pct_copy": 85.0, "sparse_us": 60.0, "sparse_pct_copy": 70.0}
# Indexer + sparse attention per layer: 60 us on an H100, 45 on an H200 (its HBM is 1.4x faster).
SPARSE_US_BY_CARD = {"H200": 45.0}


def targets_for(device_name: str) -> dict:
    """``TARGETS`` for the card named ``device_name`` (``torch.cuda.get_device_name``): the sparse path's
    time is the H100's unless the name holds a card of ``SPARSE_US_BY_CARD``."""
    card = next((c for c in SPARSE_US_BY_CARD if c in device_name.upper()), None)
    return {**TARGETS, "sparse_us": SPARSE_US_BY_CARD[card]} if card else dict(TARGETS)


@dataclass(frozen=True)
class Shape:
    q_heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    page_size: int = 16
    budget: int = 32
    sink: int = 1
    local: int = 2
    dtype: torch.dtype = torch.bfloat16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    p.add_argument("--layers", type=int, default=4, help="distinct q/centroid sets cycled through (cold L2)")
    p.add_argument("--calls", type=int, default=8, help="calls per timed CUDA graph")
    p.add_argument("--out", default="bench_results/bench_kernels.json")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes in the Triton interpreter")
    args = p.parse_args()
    if CPU_SMOKE:
        args.batches, args.contexts, args.layers, args.calls = [2], [64, 100], 2, 1
    return args


# ------------------------------------------------------------------------------------------------ problem
def make_problem(batch: int, context: int, shape: Shape, layers: int, device) -> dict:
    """A paged cache with every request at ``context`` tokens on shuffled pages, its contiguous copy,
    and ``layers`` sets of queries and centroids."""
    n_pages = math.ceil(context / shape.page_size)
    total = batch * n_pages
    perm = torch.randperm(total, device=device, dtype=torch.int32)
    prob = {"page_table": perm.view(batch, n_pages),
            "seq_lens": torch.full((batch,), context, dtype=torch.int32, device=device),
            "budgets": torch.full((batch,), shape.budget, dtype=torch.int32, device=device)}
    for name in ("k", "v"):
        contiguous = torch.randn(batch, shape.kv_heads, n_pages * shape.page_size, shape.head_dim,
                                 device=device, dtype=shape.dtype)
        paged = torch.empty(total, shape.kv_heads, shape.page_size, shape.head_dim, device=device,
                            dtype=shape.dtype)
        per_page = contiguous.view(batch, shape.kv_heads, n_pages, shape.page_size, shape.head_dim)
        paged[perm.long()] = per_page.transpose(1, 2).reshape(total, *paged.shape[1:])
        prob[f"{name}_cache"], prob[f"{name}_contiguous"] = paged, contiguous[:, :, :context]
        del per_page
    prob["q"] = [torch.randn(batch, shape.q_heads, shape.head_dim, device=device, dtype=shape.dtype)
                 for _ in range(layers)]
    prob["centroids"] = [torch.randn(total, shape.kv_heads, 1, shape.head_dim, device=device, dtype=shape.dtype)
                         for _ in range(layers)]
    return prob


def select_kw(shape: Shape) -> dict:
    return dict(sink_pages=shape.sink, local_pages=shape.local, max_budget=shape.budget)


# -------------------------------------------------------------------------------------------------- ops
def dense_triton(prob, i):
    cache = (prob["k_cache"], prob["v_cache"], prob["page_table"], prob["seq_lens"])
    return kernels.dense_decode_attention(prob["q"][i], *cache)[0]


def dense_torch(prob, i, shape: Shape):
    q = prob["q"][i]
    batch = q.shape[0]
    q4 = q.view(batch, shape.kv_heads, shape.q_heads // shape.kv_heads, shape.head_dim)
    o = F.scaled_dot_product_attention(q4, prob["k_contiguous"], prob["v_contiguous"])
    return o.reshape(batch, shape.q_heads, shape.head_dim)


def indexer_triton(prob, i, shape: Shape):
    return kernels.block_sparse_indexer(prob["q"][i], prob["centroids"][i], prob["page_table"], prob["seq_lens"],
                                        prob["budgets"], page_size=shape.page_size, **select_kw(shape))


def indexer_torch(prob, i, shape: Shape):
    return kernels.block_sparse_indexer_ref(prob["q"][i], prob["centroids"][i], prob["page_table"],
                                            prob["seq_lens"], prob["budgets"], page_size=shape.page_size,
                                            **select_kw(shape))


def sparse_triton(prob, i, shape: Shape):
    ids = indexer_triton(prob, i, shape)
    cache = (prob["k_cache"], prob["v_cache"], prob["page_table"], prob["seq_lens"])
    return kernels.sparse_decode_attention(prob["q"][i], *cache, ids)[0]


def gather_sdpa(prob, i, ids, shape: Shape):
    """Torch sparse attention: gather the listed pages into a small contiguous cache, then SDPA."""
    q = prob["q"][i]
    batch, heads, budget = ids.shape
    ids = ids.long()  # physical page ids, as the indexer writes them
    phys = ids.clamp(min=0)
    head = torch.arange(heads, device=q.device)[None, :, None]
    keys = prob["k_cache"][phys, head].reshape(batch, heads, budget * shape.page_size, shape.head_dim)
    values = prob["v_cache"][phys, head].reshape(batch, heads, budget * shape.page_size, shape.head_dim)
    # Every page is full but each request's last one.
    seq_lens = prob["seq_lens"].long()
    n = (seq_lens + shape.page_size - 1) // shape.page_size
    last = prob["page_table"].long().gather(1, (n - 1).clamp(min=0)[:, None]).view(batch, 1, 1, 1)
    fill = (seq_lens - (n - 1) * shape.page_size).view(batch, 1, 1, 1)
    slot = torch.arange(shape.page_size, device=q.device)
    valid = (ids[..., None] >= 0) & ((ids[..., None] != last) | (slot < fill))
    q4 = q.view(batch, heads, shape.q_heads // heads, shape.head_dim)
    o = F.scaled_dot_product_attention(q4, keys, values, attn_mask=valid.view(batch, heads, 1, -1))
    return o.reshape(batch, shape.q_heads, shape.head_dim)


def sparse_torch(prob, i, shape: Shape):
    return gather_sdpa(prob, i, indexer_torch(prob, i, shape), shape)


# ----------------------------------------------------------------------------------------------- timing
def time_per_call(fn, calls: int, device) -> tuple[float, bool]:
    """Seconds per call of ``fn(i)``, ``i`` cycling; a CUDA graph of ``calls`` calls when it captures."""
    if device.type != "cuda":
        fn(0)
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        return (time.perf_counter() - start) / calls, False
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and autotune outside the capture
        for i in range(2):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    graph, graphed = torch.cuda.CUDAGraph(), True
    try:
        with torch.cuda.graph(graph):
            for i in range(calls):
                fn(i)
        run = graph.replay
    except RuntimeError:  # not capturable: time eager calls instead (launch overhead included)
        graphed = False
        run = lambda: [fn(i) for i in range(calls)]  # noqa: E731
    run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(5):
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(samples), graphed


def copy_bandwidth(device) -> float:
    """Bytes/s of a 1 GiB device copy (read + write counted): the roofline the kernels are held to."""
    n = (1 << 29) if device.type == "cuda" else (1 << 20)
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    seconds, _ = time_per_call(lambda i: dst.copy_(src), 4, device)
    return 2 * src.numel() * src.element_size() / seconds


# ------------------------------------------------------------------------------------------------ bench
def traffic(batch: int, context: int, shape: Shape) -> dict:
    """Bytes each op must read from memory."""
    elem = torch.tensor([], dtype=shape.dtype).element_size()
    n_pages = math.ceil(context / shape.page_size)
    row = shape.kv_heads * shape.head_dim * elem  # one token (or centroid) of all KV heads
    centroids = batch * n_pages * row
    selected = 2 * batch * min(shape.budget, n_pages) * shape.page_size * row
    return {"dense": 2 * batch * context * row, "indexer": centroids, "sparse": selected + centroids}


def working_set(op: str, nbytes: dict, layers: int, kv_bytes: int) -> int:
    """Bytes that calls of ``op`` cycled over ``layers`` query/centroid sets read in all (``nbytes``: one
    call's, from :func:`traffic`): the one cache for dense; each layer's pages of it for the sparse attention
    (``attention``; at most the whole cache); each layer's centroids for the indexer; both for ``sparse``.
    Under about twice the L2, the timed calls read from L2, faster than a decode step's cold reads."""
    selected = min(layers * (nbytes["sparse"] - nbytes["indexer"]), kv_bytes)
    return {"dense": nbytes["dense"], "indexer": layers * nbytes["indexer"], "attention": selected,
            "sparse": selected + layers * nbytes["indexer"]}[op]


def l2_bytes(device) -> int:
    return torch.cuda.get_device_properties(device).L2_cache_size if device.type == "cuda" else 0


def check(prob, shape: Shape) -> dict:
    """Agreement of the Triton ops with the torch references on layer 0."""
    dense_err = (dense_triton(prob, 0).float() - dense_torch(prob, 0, shape).float()).abs().max()
    ids_t, ids_r = indexer_triton(prob, 0, shape), indexer_torch(prob, 0, shape)
    sets_equal = (ids_t == ids_r).all(dim=-1).float().mean()  # both sorted ascending
    sparse_err = (sparse_triton(prob, 0, shape).float() - gather_sdpa(prob, 0, ids_t, shape).float()).abs().max()
    return {"dense_max_abs_err": float(dense_err), "indexer_sets_equal": float(sets_equal),
            "sparse_max_abs_err": float(sparse_err)}


def bench_config(batch: int, context: int, shape: Shape, args, device, copy_bw: float) -> list[dict]:
    prob = make_problem(batch, context, shape, args.layers, device)
    layers = args.layers
    ops = {
        ("dense", "triton"): lambda i: dense_triton(prob, i % layers),
        ("dense", "torch sdpa"): lambda i: dense_torch(prob, i % layers, shape),
        ("indexer", "triton"): lambda i: indexer_triton(prob, i % layers, shape),
        ("indexer", "torch"): lambda i: indexer_torch(prob, i % layers, shape),
        ("sparse", "triton"): lambda i: sparse_triton(prob, i % layers, shape),
        ("sparse", "torch gather+sdpa"): lambda i: sparse_torch(prob, i % layers, shape),
    }
    checks = check(prob, shape)
    nbytes = traffic(batch, context, shape)
    kv_bytes, l2 = 2 * prob["k_cache"].numel() * prob["k_cache"].element_size(), l2_bytes(device)
    rows = []
    for (op, impl), fn in ops.items():
        seconds, graphed = time_per_call(fn, args.calls, device)
        bw = nbytes[op] / seconds
        rows.append({"batch": batch, "context": context, "op": op, "impl": impl, "us": seconds * 1e6,
                     "GB/s": bw / 1e9, "pct_copy": 100 * bw / copy_bw, "bytes": nbytes[op],
                     "cuda_graph": graphed, "l2_hot": working_set(op, nbytes, layers, kv_bytes) < 2 * l2,
                     **checks})
    del prob, ops
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def target_rows(rows: list[dict], targets: dict = TARGETS) -> tuple[dict | None, dict | None]:
    """The Triton dense and sparse rows at the targets' batch and context (``None`` for one that did not
    run); other rows (other sizes, the copy row) are passed over."""
    pick = {(r.get("op"), r.get("impl")): r for r in rows
            if (r.get("batch"), r.get("context")) == (targets["batch"], targets["context"])}
    return pick.get(("dense", "triton")), pick.get(("sparse", "triton"))


def target_checks(rows: list[dict], targets: dict = TARGETS) -> dict:
    """``targets`` (:func:`targets_for`) at their batch and context (``None`` when that config did not run)."""
    dense, sparse = target_rows(rows, targets)
    return {
        f"dense_pct_copy>={targets['dense_pct_copy']:g}":
            None if dense is None else dense["pct_copy"] >= targets["dense_pct_copy"],
        f"sparse_us<={targets['sparse_us']:g}": None if sparse is None else sparse["us"] <= targets["sparse_us"],
        f"sparse_pct_copy>={targets['sparse_pct_copy']:g}":
            None if sparse is None else sparse["pct_copy"] >= targets["sparse_pct_copy"],
    }


def device_info(device) -> dict:
    import triton

    info = {"device": "cpu (Triton interpreter)" if device.type != "cuda" else torch.cuda.get_device_name(device),
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    return info


def print_table(rows: list[dict], copy_bw: float, info: dict, targets: dict) -> None:
    print(f"\ndevice: {info['device']}  torch {info['torch']}  triton {info['triton']}  "
          f"copy bandwidth {copy_bw / 1e9:.0f} GB/s")
    head = (f"{'batch':>5} {'context':>7} {'op':>8} {'impl':>18} {'us/layer':>10} {'GB/s':>8} {'%copy':>6} "
            f"{'graph':>5}  check (triton vs torch)")
    print(head)
    print("-" * len(head))
    check = {"dense": lambda r: f"max|do| {r['dense_max_abs_err']:.1e}",
             "indexer": lambda r: f"equal sets {100 * r['indexer_sets_equal']:.1f}%",
             "sparse": lambda r: f"max|do| {r['sparse_max_abs_err']:.1e}"}
    for r in rows:
        print(f"{r['batch']:>5} {r['context']:>7} {r['op']:>8} {r['impl']:>18} {r['us']:>10.1f} "
              f"{r['GB/s']:>8.1f} {r['pct_copy']:>6.1f} {str(r['cuda_graph']):>5}  {check[r['op']](r)}")
    print(f"targets (batch {TARGETS['batch']}, context {TARGETS['context']}): {targets}")


def main() -> None:
    args = parse_args()
    device = torch.device("cpu" if CPU_SMOKE else "cuda")
    shape = Shape(q_heads=4, kv_heads=2, head_dim=64, budget=4, dtype=torch.float32) if CPU_SMOKE else Shape()
    if not kernels.HAS_TRITON:
        raise SystemExit("bench_kernels.py needs Triton: pip install 'vortex-rl[test]'")
    torch.manual_seed(0)
    info = device_info(device)
    targets = targets_for(info["device"])
    copy_bw = copy_bandwidth(device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for batch in args.batches:
        for context in args.contexts:
            try:
                rows += bench_config(batch, context, shape, args, device, copy_bw)
            except torch.cuda.OutOfMemoryError:
                print(f"batch {batch} context {context}: out of memory, skipped", file=sys.stderr)
                torch.cuda.empty_cache()
            # Written after every config, so a long run leaves its results on disk as it goes.
            out.write_text(json.dumps({"info": info, "copy_GBps": copy_bw / 1e9, "shape": repr(shape),
                                       "targets": targets, "target_checks": target_checks(rows, targets),
                                       "rows": rows}, indent=1))
            print(f"done batch {batch} context {context}", file=sys.stderr)
    print_table(rows, copy_bw, info, target_checks(rows, targets))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

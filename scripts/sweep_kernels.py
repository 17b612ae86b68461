"""Launch variants of the decode kernels and the indexer, timed in one run: what a lent GPU must tell us
to choose their defaults (``paged_decode.default_decode_launch``, ``split_kv.split_count_for``, the
indexer's ``choose_num_chunks``) without a second loan.

At the Qwen3-0.6B decode shape (``bench_kernels.Shape``: 16 query / 8 KV heads, head_dim 128, bf16,
page 16, budget 32) and 16K context, three sweeps:

1. ``tile``: dense and sparse decode at batch 32 over ``DecodeLaunch(pages_per_block, num_stages,
   num_warps)`` (the sparse kernel on the indexer's page lists, computed once);
2. ``splits``: dense and sparse decode at batch 1, 4 and 32 over the split-KV grid, ``num_splits``;
3. ``chunks``: the indexer at batch 1, 4 and 32 over ``num_chunks``.

Every variant's output is compared with the default launch's on the same inputs (``max_abs_diff``, and
``rel_diff`` relative to the default's largest output; the indexer's page lists must be equal), so a fast
variant that computes something else shows. A variant the
GPU cannot run (too much shared memory, say) is recorded with its error and the sweep goes on. Timing is
``bench_kernels.time_per_call`` (CUDA graphs of several calls, inputs cycled over several layers' queries
and centroids, median of 5); bandwidth is each op's fewest bytes (``bench_kernels.traffic``) over time.
``l2_hot``: what the cycled calls read is under twice the L2 (the sparse kernel and the indexer at batch 1
and 4, dense at batch 1), so those times are L2's, faster than a decode step's cold reads: compare
variants there with that in mind.

    python scripts/sweep_kernels.py                # on a GPU: about a minute, most of it compiling
    python scripts/sweep_kernels.py --cpu-smoke    # tiny shapes in the Triton interpreter
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch

CPU_SMOKE = "--cpu-smoke" in sys.argv or not torch.cuda.is_available()
if CPU_SMOKE:  # before anything imports Triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import bench_kernels as bk  # noqa: E402

from vortex_rl import kernels  # noqa: E402
from vortex_rl.kernels import DecodeLaunch, default_decode_launch  # noqa: E402
from vortex_rl.kernels.split_kv import grid_splits, request_splits  # noqa: E402

CONTEXT = 16384
TILE_BATCH = 32  # the batch of the targets; the tile sweep runs there only
SPLIT_BATCHES = (1, 4, 32)
# pages_per_block x num_stages x num_warps around the default (4, 3, 4) at head_dim 128, bf16: 32-128
# tokens per step, 2-4 stages. All fit one Hopper SM (the largest, 8 pages x 4 stages, takes 204,800 B of
# 227 KB: ``inspect_kernels.py --tiles``); one that did not would be recorded with its error.
TILES = [DecodeLaunch(p, s, w) for p, s, w in itertools.product((2, 4, 8), (2, 3, 4), (4, 8))]
SPLITS = (1, 2, 4, 8, 16)
CHUNKS = (1, 2, 4, 8, 16)
# A variant agrees with the default when its outputs differ by at most this fraction of the default's
# largest |output|: 5 bf16 ulps there (other tiles and split points round the fp32 state differently by
# an ulp or so). An absolute bound would not do: attention over 16K random tokens averages its values to
# outputs of ~0.05, so 2e-2 absolute would let a variant through that drops a large share of the tokens.
AGREE_REL = 2e-2


def sweep_setup(smoke: bool) -> dict:
    """The sweeps' sizes: the real ones, or interpreter-sized (head_dim 32 fp32, 100-token contexts, a few
    variants of each sweep)."""
    if not smoke:
        return dict(shape=bk.Shape(), context=CONTEXT, tile_batch=TILE_BATCH, split_batches=SPLIT_BATCHES,
                    tiles=TILES, splits=SPLITS, chunks=CHUNKS, layers=4, calls=8)
    return dict(shape=bk.Shape(q_heads=4, kv_heads=2, head_dim=32, budget=4, dtype=torch.float32), context=100,
                tile_batch=2, split_batches=(1, 2), tiles=[DecodeLaunch(1, 2), DecodeLaunch(2, 3, 8)],
                splits=(1, 2), chunks=(1, 2), layers=2, calls=1)


def run_sweeps(device: torch.device, shape: bk.Shape, context: int, tile_batch: int, split_batches: tuple,
               tiles: list, splits: tuple, chunks: tuple, layers: int, calls: int,
               progress: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """One row per variant: sweep, op, batch, variant, us, GB/s, pct_copy, speedup over the default,
    max_abs_diff (or pages_equal) against the default's output, or the error it raised.

    The tile batch runs first (the targets' batch, and most of the compiling); ``progress(rows)`` is
    called after every op, so a run stopped at its time limit leaves what it measured. An op whose
    default launch fails is recorded with its error and its variants are skipped: the other ops go on."""
    copy_bw = bk.copy_bandwidth(device)
    l2 = bk.l2_bytes(device)
    rows = []
    for batch in sorted(set(split_batches) | {tile_batch}, key=lambda b: (b != tile_batch, b)):
        prob = bk.make_problem(batch, context, shape, layers, device)
        traffic = bk.traffic(batch, context, shape)
        nbytes = dict(traffic, sparse=traffic["sparse"] - traffic["indexer"])  # attention alone: lists precomputed
        kv_bytes = 2 * prob["k_cache"].numel() * prob["k_cache"].element_size()
        cache = (prob["k_cache"], prob["v_cache"], prob["page_table"], prob["seq_lens"])
        ids = [bk.indexer_triton(prob, i, shape) for i in range(layers)]  # the sparse kernel's inputs

        def indexer(i, **kw):
            return kernels.block_sparse_indexer(prob["q"][i], prob["centroids"][i], prob["page_table"],
                                                prob["seq_lens"], prob["budgets"], page_size=shape.page_size,
                                                **bk.select_kw(shape), **kw)

        ops = {
            "dense": lambda i, **kw: kernels.dense_decode_attention(prob["q"][i], *cache, **kw)[0],
            "sparse": lambda i, **kw: kernels.sparse_decode_attention(prob["q"][i], *cache, ids[i], **kw)[0],
            "indexer": indexer,
        }
        variants = []
        if batch in split_batches:
            variants += [("splits", op, _split_name(op, s, shape, context), {"num_splits": s})
                         for op in ("dense", "sparse") for s in splits]
            variants += [("chunks", "indexer", f"num_chunks={c}", {"num_chunks": c}) for c in chunks]
        if batch == tile_batch:
            variants += [("tile", op, _tile_name(t), {"config": t}) for op in ("dense", "sparse") for t in tiles]
        for op in ("dense", "sparse", "indexer"):
            try:
                default_out = ops[op](0)
                seconds, graphed = bk.time_per_call(lambda i, fn=ops[op]: fn(i % layers), calls, device)
                rows.append(_row("default", op, batch, "default", seconds, graphed, nbytes[op], copy_bw,
                                 default_out, default_out))
            except Exception as e:  # noqa: BLE001 - recorded; without a default its variants say nothing
                rows.append(_error_row("default", op, batch, "default", e))
                variants = [v for v in variants if v[1] != op]
            for sweep, _, name, kw in (v for v in variants if v[1] == op):
                try:
                    out = ops[op](0, **kw)
                    seconds, graphed = bk.time_per_call(lambda i, fn=ops[op], kw=kw: fn(i % layers, **kw), calls,
                                                        device)
                    rows.append(_row(sweep, op, batch, name, seconds, graphed, nbytes[op], copy_bw, out,
                                     default_out))
                except Exception as e:  # noqa: BLE001 - recorded: one variant the GPU cannot run ends nothing
                    rows.append(_error_row(sweep, op, batch, name, e))
            for r in rows:
                if r["op"] == op and r["batch"] == batch and "us" in r:
                    # True: served from L2, faster than HBM can be; not what a decode step sees
                    r["l2_hot"] = bk.working_set("attention" if op == "sparse" else op, traffic, layers,
                                                 kv_bytes) < 2 * l2
            if progress is not None:
                progress(rows)
        del prob, ids, ops
        if device.type == "cuda":
            torch.cuda.empty_cache()
    default_us = {(r["op"], r["batch"]): r["us"] for r in rows if r["sweep"] == "default" and "us" in r}
    for r in rows:
        if "us" in r:
            r["speedup"] = default_us[r["op"], r["batch"]] / r["us"]
    return rows


def splits_used(num_splits: int, entries: int, pages_per_block: int) -> int:
    """Splits a request of ``entries`` page-list entries really spreads over when ``num_splits`` are asked
    for (``split_kv.grid_splits`` then ``split_kv.request_splits``: the launcher's cap, the kernel's rule)."""
    blocks = -(-entries // pages_per_block)
    return request_splits(grid_splits(num_splits, blocks), blocks)


def _split_name(op: str, num_splits: int, shape: bk.Shape, context: int) -> str:
    """``num_splits=8``, or ``num_splits=8 (uses 4)`` where the kernel spreads each request over fewer
    (the sparse page list of ``budget`` entries has few blocks): such variants differ in empty programs only."""
    elem = torch.tensor([], dtype=shape.dtype).element_size()
    ppb = default_decode_launch(shape.page_size, shape.head_dim, elem).pages_per_block
    entries = shape.budget if op == "sparse" else -(-context // shape.page_size)
    used = splits_used(num_splits, entries, ppb)
    return f"num_splits={num_splits}" + (f" (uses {used})" if used != num_splits else "")


def _error_row(sweep: str, op: str, batch: int, name: str, e: Exception) -> dict:
    error = f"{type(e).__name__}: {str(e)[:200]}"
    print(f"{sweep} {op} batch {batch} {name}: {error}", flush=True)
    return {"sweep": sweep, "op": op, "batch": batch, "variant": name, "error": error}


def _tile_name(t: DecodeLaunch) -> str:
    return f"ppb={t.pages_per_block} stages={t.num_stages} warps={t.num_warps}"


def _row(sweep, op, batch, name, seconds, graphed, nbytes, copy_bw, out, default_out) -> dict:
    # cuda_graph False: capture failed and eager calls were timed, launch overhead included
    row = {"sweep": sweep, "op": op, "batch": batch, "variant": name, "us": seconds * 1e6,
           "GB/s": nbytes / seconds / 1e9, "pct_copy": 100 * nbytes / seconds / copy_bw, "cuda_graph": graphed}
    if op == "indexer":
        row["pages_equal"] = bool(torch.equal(out, default_out))
    else:
        row["max_abs_diff"] = float((out.float() - default_out.float()).abs().max())
        row["rel_diff"] = row["max_abs_diff"] / max(float(default_out.float().abs().max()), 1e-30)
    return row


def best_rows(rows: list[dict]) -> list[dict]:
    """Per (sweep, op, batch): the fastest variant that computes what the default does, beside the default.
    ``rel_diff`` (``max_abs_diff`` over the default's largest output) up to ``AGREE_REL`` counts as the same."""
    def agrees(r):
        return r.get("pages_equal", True) and r.get("rel_diff", 0.0) <= AGREE_REL

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["sweep"] != "default" and "us" in r and agrees(r):
            groups.setdefault((r["sweep"], r["op"], r["batch"]), []).append(r)
    default = {(r["op"], r["batch"]): r for r in rows if r["sweep"] == "default" and "us" in r}
    failed: dict[tuple, int] = {}
    for r in rows:
        if "error" in r or ("us" in r and not agrees(r)):
            failed[r["sweep"], r["op"], r["batch"]] = failed.get((r["sweep"], r["op"], r["batch"]), 0) + 1
    out = []
    for (sweep, op, batch), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        best, d = min(group, key=lambda r: r["us"]), default[op, batch]
        out.append({"sweep": sweep, "op": op, "batch": batch, "default_us": d["us"],
                    "default_pct_copy": d["pct_copy"], "best": best["variant"], "best_us": best["us"],
                    "best_pct_copy": best["pct_copy"], "speedup": best["speedup"],
                    "variants": len(group), "failed": failed.get((sweep, op, batch), 0), "l2_hot": d.get("l2_hot")})
    return out


def default_tile(shape: bk.Shape) -> str:
    elem = torch.tensor([], dtype=shape.dtype).element_size()
    return _tile_name(default_decode_launch(shape.page_size, shape.head_dim, elem))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes in the Triton interpreter")
    p.add_argument("--out", default="bench_results/sweep_kernels.json")
    args = p.parse_args(argv)
    device = torch.device("cpu" if CPU_SMOKE else "cuda")
    torch.manual_seed(0)
    setup = sweep_setup(CPU_SMOKE)
    shape, context = setup["shape"], setup["context"]
    result = {"device": bk.device_info(device), "shape": {k: str(v) for k, v in vars(shape).items()},
              "context": context, "default_tile": default_tile(shape), "complete": False, "best": [], "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict], complete: bool = False) -> None:  # after every op: a stopped run keeps its rows
        result.update(rows=rows, complete=complete)
        out.write_text(json.dumps(result, indent=2, default=str))

    rows = run_sweeps(device, **setup, progress=write)
    best = best_rows(rows)
    result["best"] = best
    write(rows, complete=True)
    print(f"default tile: {result['default_tile']}; context {context}")
    print(f"{'sweep':<7} {'op':<8} {'batch':>5} {'default us':>10} {'best':<28} {'best us':>9} {'x':>5} "
          f"{'%copy':>6} {'n':>3} {'fail':>4}")
    for r in best:
        print(f"{r['sweep']:<7} {r['op']:<8} {r['batch']:>5} {r['default_us']:>10.1f} {r['best']:<28} "
              f"{r['best_us']:>9.1f} {r['speedup']:>5.2f} {r['best_pct_copy']:>6.1f} {r['variants']:>3} "
              f"{r['failed']:>4}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

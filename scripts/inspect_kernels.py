"""Compile every decode-step kernel ahead of time for sm_90 (no GPU needed) and report what the compiler made.

The engine path of one layer (sparse: fused append + indexer + sparse attention; dense: append +
dense attention; the SGLang path: page pooling + indexer + sparse attention) is driven with ``meta``
tensors at the Qwen3-0.6B decode shape under ``record_launches(run=False)``, so every kernel is compiled
with exactly the arguments its launcher would pass (divisibility hints as Triton's JIT derives them).
Per kernel it prints:

- ``shared``: bytes of shared memory (``metadata.shared``);
- ``buffers``: per pipelined load in a loop, how many shared-memory buffers it got. Counted from the
  TTGIR: the software pipeliner turns a load it pipelines into ``ttg.async_copy_global_to_local`` into
  one slot of a ``ttg.local_alloc : () -> !ttg.memdesc<N x tile>``; ``N`` is the number of buffers (1:
  the load is waited for in the step that issues it; >= 2: later tiles are in flight while one is used).
  Named by the tile (``64x128xbf16``), matched to K/V (or centroids) by the launch's block sizes;
- ``wait``: the smallest ``num`` of an ``async_wait`` inside a loop (``0`` = waits for every copy in
  flight, i.e. nothing overlaps the compute);
- ``regs`` / ``spills``: from ``ptxas -v`` (Triton's own ptxas) on the generated PTX;
- launches per layer: Triton launches plus torch ops that launch a kernel (allocations and views do not).

Usage: ``python scripts/inspect_kernels.py [--out bench_results/inspect_kernels.json] [--only decode]``
(``--only`` keeps kernels whose name contains the word, for a quick check).
"""

import os

os.environ.pop("TRITON_INTERPRET", None)  # before Triton is imported: compile, do not interpret

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

SHAPE = dict(batch=32, q_heads=16, kv_heads=8, head_dim=128, page_size=16, budget_pages=32, context=16384,
             dtype="bfloat16")
ARCH = 90
H100_SMS = 132
# Ops that allocate or re-view memory: no kernel launch.
_NO_LAUNCH = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "lift_fresh", "detach",
              "alias", "_to_copy_meta"}
_HOST_SYNC = {"_local_scalar_dense", "item", "nonzero", "equal", "is_nonzero"}


class _OpCounter(TorchDispatchMode):
    """Counts the torch ops that would launch a kernel, and any that would sync with the host."""

    def __init__(self):
        super().__init__()
        self.launches, self.syncs = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _HOST_SYNC:
            self.syncs.append(name)
        elif not func.is_view and name not in _NO_LAUNCH:
            self.launches.append(name)
        return func(*args, **(kwargs or {}))


@contextmanager
def _as_if_sms(sms: int):
    """Split-KV and indexer chunk counts chosen as on a CUDA device with ``sms`` SMs (meta tensors have none)."""
    from vortex_rl.kernels import indexer, paged_decode, split_kv

    saved = paged_decode.choose_num_splits, indexer.choose_num_chunks
    paged_decode.choose_num_splits = lambda batch, kv_heads, num_blocks, device: split_kv.split_count_for(
        batch * kv_heads, num_blocks, sms, min_blocks=split_kv.MIN_BLOCKS_PER_SPLIT, max_splits=split_kv.MAX_SPLITS)
    indexer.choose_num_chunks = lambda rows, num_blocks, device: split_kv.split_count_for(
        rows, num_blocks, sms, min_blocks=1, max_splits=indexer.MAX_CHUNKS)
    try:
        yield
    finally:
        paged_decode.choose_num_splits, indexer.choose_num_chunks = saved


# ``--sweep``: every other shape ``gpu_check.py`` compiles a kernel for, beside SHAPE: GQA 1/2/4 at bf16
# (kernel checks, rollout throughput), fp16, and the head_dim-16 tiny model of its GRPO phase (fp32 in
# the CPU smoke run, bf16 on the GPU: the engine's "auto" dtype). A kernel that does not compile for one
# of them would end that phase on the lent GPU.
SMALL_HEADS = dict(SHAPE, q_heads=4, kv_heads=2, head_dim=16, budget_pages=4, context=512, dtype="bfloat16")
SWEEP = [
    dict(SHAPE, q_heads=8), dict(SHAPE, q_heads=32), dict(SHAPE, dtype="float16"),
    dict(SMALL_HEADS, dtype="float32"), SMALL_HEADS,
]


def layer_launches(path: str, shape: dict = SHAPE):
    """``(triton_launches, torch_ops, syncs)`` of one decode layer on ``path`` (sparse, dense, sglang;
    ``sparse_b1`` / ``dense_b1``: batch 1, as on a 132-SM H100, where the indexer and split-KV split)."""
    if path.endswith("_b1"):
        with _as_if_sms(H100_SMS):
            return _layer_launches(path.removesuffix("_b1"), 1, shape)
    return _layer_launches(path, shape["batch"], shape)


def _layer_launches(path: str, b: int, s: dict):
    from vortex_rl.kernels._triton import record_launches
    from vortex_rl.sparse import FlowRunner, SparseConfig

    meta = dict(device="meta", dtype=getattr(torch, s["dtype"]))
    kv, d, ps = s["kv_heads"], s["head_dim"], s["page_size"]
    max_pages = s["context"] // ps
    num_pages = b * max_pages + 1
    config = SparseConfig(page_size=ps, budget_pages=s["budget_pages"], sink_pages=1, local_pages=2)
    flow = "dense" if path == "dense" else "block_sparse_attention"
    runner = FlowRunner(flow, config, num_q_heads=s["q_heads"], num_kv_heads=kv, head_dim=d, kernel_backend="triton")
    cache = {"k": torch.empty(num_pages, kv, ps, d, **meta), "v": torch.empty(num_pages, kv, ps, d, **meta)}
    cache.update(runner.allocate_state(num_pages, dtype=meta["dtype"], device="meta"))
    page_table = torch.empty(b, max_pages, dtype=torch.int32, device="meta")
    seq_lens = torch.empty(b, dtype=torch.int32, device="meta")
    ctx = runner.plan(page_table, seq_lens)  # once per step, shared by the layers: not counted
    q = torch.empty(b, s["q_heads"], d, **meta)
    # k, v as rows of one qkv projection output: strided, as the model hands them over.
    qkv = torch.empty(b, (s["q_heads"] + 2 * kv) * d, **meta)
    k = qkv[:, s["q_heads"] * d:(s["q_heads"] + kv) * d].view(b, kv, d)
    v = qkv[:, (s["q_heads"] + kv) * d:].view(b, kv, d)
    loc = torch.empty(b, dtype=torch.int64, device="meta")
    counter = _OpCounter()
    with record_launches(run=False) as launches, counter:
        if path == "sglang":  # SGLang writes K/V itself, then the backend pools and attends
            runner.update_state(cache, loc)
            pages = runner.select(q, cache, ctx)
            runner._kernels(q).sparse_decode(q, cache["k"], cache["v"], ctx.page_table, ctx.seq_lens, pages,
                                             list_lens=ctx.budgets)
        else:
            runner.write(k, v, cache, loc)
            runner.decode(q, cache, ctx)
    return launches, counter.launches, counter.syncs


def _signature(launch):
    """Triton's JIT specialisation of the recorded arguments: ``(signature, constexprs, attrs, options)``."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    fn = launch.kernel
    args = dict(launch.args)
    options = {k: args.pop(k) for k in ("num_warps", "num_stages") if k in args}
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        value = args[p.name]
        if p.is_constexpr:
            signature[p.name], constexprs[p.name] = "constexpr", value
            continue
        ty, key = native_specialize_impl(BaseBackend, value, False, not p.do_not_specialize,
                                         not p.do_not_specialize_on_alignment)
        signature[p.name] = ty
        if ty == "constexpr":
            constexprs[p.name] = key
        elif key == "D":
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs, options


_ALLOC = re.compile(r"%([A-Za-z_]\w*?)(?:_\d+)? = ttg\.local_alloc : \(\) -> !ttg\.memdesc<([\dx]+)x(\w+),")
_WAIT = re.compile(r"^(\s*).*ttg\.async_wait.*\{num = (\d+) : i32\}")


def pipeline_buffers(ttgir: str) -> list[dict]:
    """The multi-buffer allocations of the pipeliner: ``{"name", "buffers", "tile", "dtype"}`` each."""
    out = []
    for name, dims, dtype in _ALLOC.findall(ttgir):
        shape = [int(x) for x in dims.split("x")]
        if len(shape) >= 2:
            out.append({"name": name, "buffers": shape[0], "tile": shape[1:], "dtype": dtype})
    return out


def in_loop_wait(ttgir: str) -> int | None:
    """Smallest ``async_wait num`` inside a loop body (deeper than the function body's indentation)."""
    nums = [int(m.group(2)) for line in ttgir.splitlines() if (m := _WAIT.match(line)) and len(m.group(1)) > 4]
    return min(nums) if nums else None


def _ptxas_usage(ptx: str) -> tuple[int | None, int | None]:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        log = subprocess.run([get_ptxas(ARCH).path, "-v", f"--gpu-name=sm_{ARCH}a", str(src), "-o", str(src) + ".o"],
                             capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return (int(regs.group(1)) if regs else None), (int(spills.group(1)) if spills else None)


def _tile_of(name: str, constexprs: dict) -> tuple[str, list[int]] | None:
    """What the kernel's main pipelined tiles are (K/V, or centroids) and their shape."""
    if name == "_paged_decode_kernel":
        return "K/V", [constexprs["BLOCK_N"], constexprs["BLOCK_D"]]
    if name == "_block_sparse_indexer_kernel" and constexprs.get("PHASE") != 2:  # phase 2 only selects
        return "centroids", [constexprs["BLOCK_P"], constexprs["BLOCK_D"]]
    return None


def compile_launch(launch) -> dict:
    """Compile one recorded launch for sm_90 and report shared memory, buffers, waits, registers, spills."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options = _signature(launch)
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs),
                              target=GPUTarget("cuda", ARCH, 32), options=options)
    ttgir = compiled.asm["ttgir"]
    regs, spills = _ptxas_usage(compiled.asm["ptx"])
    buffers = pipeline_buffers(ttgir)
    main = _tile_of(launch.name, constexprs)
    main_buffers = None
    if main is not None:
        matching = [b["buffers"] for b in buffers if b["tile"] == main[1]]
        main_buffers = min(matching) if matching else 0  # 0: the load is not pipelined through shared memory
    variant = "sparse" if constexprs.get("SPARSE") else ("dense" if "SPARSE" in constexprs else "")
    if "PHASE" in constexprs:
        variant = ["fused", "scores", "select"][constexprs["PHASE"]]
    return {
        "kernel": launch.name + (f"[{variant}]" if variant else ""),
        "grid": list(launch.grid), "num_warps": options.get("num_warps", 4), "num_stages": options.get("num_stages", 3),
        "shared": compiled.metadata.shared, "main_tiles": main[0] if main else None, "main_buffers": main_buffers,
        "buffers": buffers, "in_loop_wait": in_loop_wait(ttgir), "registers": regs, "spills": spills,
    }


def inspect(only: str | None = None) -> dict:
    paths, kernels, seen = {}, [], set()
    for path in ("sparse", "dense", "sglang", "sparse_b1", "dense_b1"):
        launches, ops, syncs = layer_launches(path)
        paths[path] = {"triton": [l.name for l in launches], "torch_ops": ops, "host_syncs": syncs,
                       "launches": len(launches) + len(ops)}
        for launch in launches:
            key = (launch.name, tuple(sorted((k, v) for k, v in launch.args.items() if k.isupper())))
            if key in seen or (only and only not in launch.name):
                continue
            seen.add(key)
            kernels.append(compile_launch(launch))
    return {"shape": SHAPE, "arch": f"sm_{ARCH}", "paths": paths, "kernels": kernels}


PATHS = ("sparse", "dense", "sglang", "sparse_b1", "dense_b1")


def sweep() -> list[dict]:
    """Compile every distinct kernel specialisation (constexprs and argument types) of the SWEEP shapes;
    one row per specialisation, with the compiler's error where it failed."""
    rows, seen = [], set()
    for shape in SWEEP:
        for path in PATHS:
            for launch in layer_launches(path, shape)[0]:
                signature, constexprs, _, _ = _signature(launch)
                key = (launch.name, tuple(sorted(signature.items())), tuple(sorted(constexprs.items())))
                if key in seen:
                    continue
                seen.add(key)
                label = f"{shape['dtype']} q{shape['q_heads']}/kv{shape['kv_heads']} d{shape['head_dim']} {path}"
                try:
                    row = compile_launch(launch)
                    rows.append({"shape": label, **{k: row[k] for k in ("kernel", "shared", "main_buffers",
                                                                         "registers", "spills")}, "error": None})
                except Exception as e:  # noqa: BLE001 - reported, and the script exits non-zero
                    rows.append({"shape": label, "kernel": launch.name, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def tiles() -> list[dict]:
    """The decode kernel at SHAPE under every launch variant ``sweep_kernels.py`` times on a GPU (its
    ``TILES``): shared memory says which ones a Hopper SM can hold (227 KB for one program), buffers and
    spills what each costs. One row per (path, variant), with the compiler's error where it failed."""
    from vortex_rl import kernels
    from vortex_rl.kernels._triton import record_launches

    import sweep_kernels  # after vortex_rl.kernels is compiled-mode: its CPU default sets TRITON_INTERPRET
    os.environ.pop("TRITON_INTERPRET", None)

    s, meta = SHAPE, dict(device="meta", dtype=getattr(torch, SHAPE["dtype"]))
    max_pages = s["context"] // s["page_size"]
    num_pages = s["batch"] * max_pages + 1
    q = torch.empty(s["batch"], s["q_heads"], s["head_dim"], **meta)
    k = torch.empty(num_pages, s["kv_heads"], s["page_size"], s["head_dim"], **meta)
    table = torch.empty(s["batch"], max_pages, dtype=torch.int32, device="meta")
    lens = torch.empty(s["batch"], dtype=torch.int32, device="meta")
    pages = torch.empty(s["batch"], s["kv_heads"], s["budget_pages"], dtype=torch.int32, device="meta")
    rows = []
    for path in ("sparse", "dense"):
        for tile in sweep_kernels.TILES:
            with record_launches(run=False) as launches:
                if path == "sparse":
                    kernels.sparse_decode_attention(q, k, k, table, lens, pages, config=tile, num_splits=1)
                else:
                    kernels.dense_decode_attention(q, k, k, table, lens, config=tile, num_splits=1)
            row = {"path": path, "tile": sweep_kernels._tile_name(tile)}
            try:
                got = compile_launch(launches[0])
                row.update({k: got[k] for k in ("shared", "main_buffers", "registers", "spills")}, error=None)
            except Exception as e:  # noqa: BLE001 - a variant that does not compile is a row, not a stop
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            rows.append(row)
    return rows


def _table(report: dict) -> str:
    rows = [("kernel", "shared", "main tiles", "buffers", "wait", "regs", "spills")]
    for k in report["kernels"]:
        rows.append((k["kernel"], str(k["shared"]), k["main_tiles"] or "-",
                     "-" if k["main_buffers"] is None else str(k["main_buffers"]),
                     "-" if k["in_loop_wait"] is None else str(k["in_loop_wait"]), str(k["registers"]), str(k["spills"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    for path, p in report["paths"].items():
        lines.append(f"{path} layer: {p['launches']} launches ({', '.join(p['triton'] + p['torch_ops'])})"
                     + (f"; HOST SYNCS: {p['host_syncs']}" if p["host_syncs"] else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_results/inspect_kernels.json")
    parser.add_argument("--only", default=None, help="compile only kernels whose name contains this")
    parser.add_argument("--sweep", action="store_true",
                        help="also compile every kernel specialisation gpu_check.py's other shapes need")
    parser.add_argument("--tiles", action="store_true",
                        help="also compile the decode kernel under every launch variant sweep_kernels.py times")
    args = parser.parse_args()
    import triton

    report = inspect(args.only)
    if args.sweep:
        report["sweep"] = sweep()
    if args.tiles:
        report["tiles"] = tiles()
    report["device"] = f"none (ahead-of-time for sm_{ARCH}); host {platform.node()}, triton {triton.__version__}"
    for k in report["kernels"]:
        print(f"{k['kernel']}: grid {k['grid']}, warps {k['num_warps']}, stages {k['num_stages']}, buffers "
              + ", ".join(f"{b['name']} {b['buffers']}x{'x'.join(map(str, b['tile']))}{b['dtype']}" for b in k["buffers"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nsm_{ARCH}, {SHAPE}; wrote {args.out}\n")
    print(_table(report))
    for r in report.get("tiles", []):
        print(f"tile {r['path']:<6} {r['tile']:<26} " + (f"FAILED {r['error']}" if r["error"] else
              f"shared {r['shared']:>7}, K/V buffers {r['main_buffers']}, regs {r['registers']}, spills {r['spills']}"))
    if args.sweep:
        failed = [r for r in report["sweep"] if r["error"]]
        for r in report["sweep"]:
            print(f"sweep {r['shape']:<32} {r['kernel']:<30} "
                  + (f"FAILED {r['error']}" if r["error"] else f"shared {r['shared']}, K/V buffers "
                     f"{r['main_buffers']}, regs {r['registers']}, spills {r['spills']}"))
        print(f"sweep: {len(report['sweep'])} specialisations compiled for sm_{ARCH} with triton {triton.__version__}, "
              f"{len(failed)} failed")
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()

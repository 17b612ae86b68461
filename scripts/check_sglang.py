"""Real generation in SGLang with and without the ``vortex`` attention backend (needs a GPU and SGLang).

Three engines on the same prompts, greedy, one after the other:

- ``dense``: SGLang's own attention backend (``rollout.engine=sglang`` with ``flow=dense``);
- ``vortex-full``: ``vortex`` with a budget larger than any context, so every page is attended: must
  reproduce ``dense`` up to kernel rounding (greedy tokens agree, log-probs close);
- ``vortex``: ``vortex`` with the sparse budget (default 32 pages): tokens may diverge, throughput is the
  point.

Then, on the ``vortex`` engine: ``sleep()``/``wake()``, ``update_weights`` with the checkpoint's own
weights (one SGLang weight-update session), a refused update (mis-shaped tensor) and
``update_weights_from_disk`` must leave greedy outputs and the weight checksum unchanged.

Prompts are synthetic long contexts (numbered facts, then a question about one of them), so decode
attends to more pages than the budget. Prints a table last and writes JSON (with the device) as it goes.

Usage: ``python scripts/check_sglang.py --model /path/to/Qwen3-0.6B [--prompts 64] [--context 4096]
[--max-new-tokens 256] [--budget-pages 32] [--tp 1] [--out bench_results/check_sglang.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from vortex_rl.rollout import EngineConfig, SamplingParams  # noqa: E402
from vortex_rl.rollout.sglang import SGLangOptions, make_sglang_engine  # noqa: E402
from vortex_rl.sparse import SparseConfig  # noqa: E402


LIFECYCLE_CHECKS = ("same_after_sleep_wake", "same_after_update_weights", "refused_update_kept_weights",
                    "same_after_update_from_disk", "checksum_unchanged")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--context", type=int, default=4096, help="approximate prompt length in tokens")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--budget-pages", type=int, default=32)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--dense-backend", default="auto")
    p.add_argument("--out", default="bench_results/check_sglang.json")
    return p.parse_args()


def make_prompts(tokenizer, count: int, context: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        facts, ids = [], []
        while len(ids) < context:
            facts.append(f"Fact {len(facts) + 1}: the code of box {rng.randrange(10**6)} is {rng.randrange(10**6)}.")
            ids = tokenizer.encode(" ".join(facts))
        asked = rng.randrange(len(facts))
        question = f"\nQuestion: what is the code in fact {asked + 1}? Answer, then explain how you found it."
        prompts.append(tokenizer.encode(" ".join(facts) + question))
    return prompts


def run(name: str, model: str, config: EngineConfig, options: SGLangOptions, prompts, params, report: dict, out: Path):
    engine = make_sglang_engine(model, config, options)
    try:
        engine.generate(prompts[:2], params, use_tqdm=False)  # warm-up: graphs, allocator
        start = time.perf_counter()
        completions = [group[0] for group in engine.generate(prompts, params)]
        elapsed = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for c in completions)
        report["runs"][name] = {"seconds": elapsed, "generated_tokens": tokens, "tokens_per_s": tokens / elapsed}
        _write(report, out)
        extra = check_engine_lifecycle(engine, model, prompts[:4], params) if name == "vortex" else {}
        report["runs"][name].update(extra)
        _write(report, out)
        return completions
    finally:
        engine.shutdown()


def check_engine_lifecycle(engine, model: str, prompts, params) -> dict:
    """sleep/wake, a weight update with the same weights (inside SGLang's weight-update session), a
    refused update (a mis-shaped tensor: the old weights must keep serving) and a reload from disk must
    change nothing."""
    from safetensors.torch import load_file

    from vortex_rl.rollout.sglang.weight_sync import WeightUpdateError

    def greedy():
        return [g[0].token_ids for g in engine.generate(prompts, params, use_tqdm=False)]

    before = greedy()
    checksum = engine.state_checksum()
    engine.sleep()
    engine.wake()
    after_wake = greedy()
    files = sorted(Path(model).glob("*.safetensors"))
    sent = engine.update_weights((name, t) for f in files for name, t in load_file(str(f)).items())
    after_update = greedy()
    name, tensor = next(iter(load_file(str(files[0])).items()))
    try:
        engine.update_weights([(name, tensor.flatten()[:-1])])
        refused = False
    except WeightUpdateError as exc:
        refused = not exc.weights_changed
    after_refused = greedy()
    engine.update_weights_from_disk(model)
    after_disk = greedy()
    return {
        "same_after_sleep_wake": before == after_wake,
        "same_after_update_weights": before == after_update,
        "refused_update_kept_weights": refused and before == after_refused,
        "same_after_update_from_disk": before == after_disk,
        "checksum_unchanged": engine.state_checksum() == checksum,
        "weights_sent": sent,
    }


def compare(reference, other) -> dict:
    """Greedy agreement: exact matches, mean common-prefix fraction, log-prob gap on the common prefix."""
    exact, prefix_frac, gaps = 0, [], []
    for a, b in zip(reference, other):
        n = 0
        while n < min(len(a.token_ids), len(b.token_ids)) and a.token_ids[n] == b.token_ids[n]:
            n += 1
        exact += a.token_ids == b.token_ids
        prefix_frac.append(n / max(len(a.token_ids), 1))
        gaps += [abs(x - y) for x, y in zip(a.logprobs[:n], b.logprobs[:n])]
    return {"exact_match": exact / len(reference), "common_prefix": sum(prefix_frac) / len(prefix_frac),
            "max_logprob_gap": max(gaps, default=0.0), "mean_logprob_gap": sum(gaps) / max(len(gaps), 1)}


def _write(report: dict, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def random_model_dir(directory: Path, name: str = "qwen3-0.6b", seed: int = 0) -> Path:
    """A Hugging Face directory SGLang can serve without a download: random weights of ``name``'s
    geometry (``bench_rollout.random_source``), the character tokenizer, the vocabulary cut to its size."""
    from bench_rollout import random_source
    from safetensors.torch import save_file

    from vortex_rl.data.char_tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    vocab = len(tokenizer)
    source = random_source(name, torch.device("cpu"), torch.bfloat16, seed)
    weights = {k: (v[:vocab] if k == "model.embed_tokens.weight" else v).contiguous() for k, v in source.weights}
    config = source.hf_config
    config.vocab_size, config.architectures, config.torch_dtype = vocab, ["Qwen3ForCausalLM"], "bfloat16"
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file(weights, str(directory / "model.safetensors"))
    return directory


def run_checks(model: str, prompts: list[list[int]], *, max_new_tokens: int, budget_pages: int, tp: int = 1,
               dense_backend: str = "auto", out: Path | None = None) -> dict:
    """The three engines and the lifecycle checks; returns (and writes to ``out`` as it goes) the report."""
    longest = max(len(p) for p in prompts) + max_new_tokens
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, ignore_eos=True)
    options = SGLangOptions(tp_size=tp, dense_backend=dense_backend)
    full_budget = -(-longest // 16) + 1
    configs = {
        "dense": EngineConfig(flow="dense", max_model_len=longest + 16),
        "vortex-full": EngineConfig(sparse=SparseConfig(budget_pages=full_budget), max_model_len=longest + 16),
        "vortex": EngineConfig(sparse=SparseConfig(budget_pages=budget_pages), max_model_len=longest + 16),
    }
    import sglang

    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "sglang": sglang.__version__,
              "python": platform.python_version(), "model": model, "prompts": len(prompts),
              "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts), "max_new_tokens": max_new_tokens,
              "budget_pages": budget_pages, "runs": {}}
    outputs = {name: run(name, model, cfg, options, prompts, params, report, out) for name, cfg in configs.items()}
    for name in ("vortex-full", "vortex"):
        report["runs"][name].update(compare(outputs["dense"], outputs[name]))
    _write(report, out)
    return report


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("check_sglang.py needs a CUDA GPU (SGLang's engine does not run on CPU)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = make_prompts(tokenizer, args.prompts, args.context)
    out = Path(args.out)
    report = run_checks(args.model, prompts, max_new_tokens=args.max_new_tokens, budget_pages=args.budget_pages,
                        tp=args.tp, dense_backend=args.dense_backend, out=out)
    print(f"\ndevice: {report['device']}  sglang {report['sglang']}  prompts {len(prompts)} x "
          f"~{report['mean_prompt_tokens']:.0f} tokens, {args.max_new_tokens} new tokens, greedy")
    print(f"{'engine':<12} {'tok/s':>9} {'speedup':>8} {'exact':>6} {'prefix':>7} {'max |dlogp|':>12}")
    base = report["runs"]["dense"]["tokens_per_s"]
    for name, r in report["runs"].items():
        print(f"{name:<12} {r['tokens_per_s']:>9.0f} {r['tokens_per_s'] / base:>7.2f}x {r.get('exact_match', 1):>6.2f} "
              f"{r.get('common_prefix', 1):>7.2f} {r.get('max_logprob_gap', 0):>12.2e}")
    checks = {k: v for k, v in report["runs"]["vortex"].items() if k in LIFECYCLE_CHECKS}
    print("lifecycle checks:", checks, f"-> {out}")


if __name__ == "__main__":
    main()

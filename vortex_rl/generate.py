"""Generate completions from the command line with the embedded rollout engine.

    python -m vortex_rl.generate --model PATH_OR_GGUF --prompts prompts.jsonl --max-new-tokens 128

``--prompts``: a ``.jsonl`` file with ``"prompt"`` (text) or ``"prompt_token_ids"`` per line, or a text
file with one prompt per line. Engine options are the ``EngineConfig`` / ``SparseConfig`` /
``SamplingParams`` fields of the same name (their docstrings document them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.sparse import SparseConfig, list_flows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vortex_rl.generate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model directory, .gguf file, or directory with --gguf-file")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model")
    p.add_argument("--prompts", required=True, help=".jsonl ('prompt' or 'prompt_token_ids') or one prompt per line")
    p.add_argument("--chat", action="store_true", help="wrap text prompts in the tokenizer's chat template")
    p.add_argument("--output", default=None, help="also write the completions to this .jsonl file")
    g = p.add_argument_group("SamplingParams")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=-1)
    g.add_argument("--n", type=int, default=1, help="samples per prompt")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--ignore-eos", action="store_true")
    e = p.add_argument_group("EngineConfig / SparseConfig")
    e.add_argument("--flow", default="block_sparse_attention", choices=list_flows())
    e.add_argument("--budget-pages", type=int, default=32)
    e.add_argument("--page-size", type=int, default=16)
    e.add_argument("--sink-pages", type=int, default=1)
    e.add_argument("--local-pages", type=int, default=2)
    e.add_argument("--max-num-seqs", type=int, default=256)
    e.add_argument("--max-num-batched-tokens", type=int, default=8192)
    e.add_argument("--max-model-len", type=int, default=None)
    e.add_argument("--num-pages", type=int, default=None)
    e.add_argument("--kv-cache-memory-gb", type=float, default=None)
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    e.add_argument("--dtype", default="auto")
    e.add_argument("--device", default="auto")
    e.add_argument("--enforce-eager", action="store_true")
    return p.parse_args(argv)


def read_prompts(path: str) -> list:
    """Text prompts or token-id lists, one per non-empty line; a bad line raises naming ``path:line``."""
    from vortex_rl.data.loaders import read_text_lines

    prompts = []
    for number, line in enumerate(read_text_lines(path), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if path.endswith(".jsonl"):
            prompts.append(json_prompt(line, f"{path}:{number}"))
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def json_prompt(line: str, where: str) -> str | list[int]:
    """The ``prompt`` text or the ``prompt_token_ids`` (integers, given as JSON integers) of one JSONL line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:  # its own line/column count only this one line: name the file's line
        raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'prompt' or 'prompt_token_ids' field")
    if "prompt_token_ids" in record:
        ids = record["prompt_token_ids"]
        bad = not isinstance(ids, list) or not ids or any(type(t) is not int or t < 0 for t in ids)
        if bad:  # int(1.7) would silently turn [1.7, 2.2] into [1, 2]
            raise ValueError(f"{where}: prompt_token_ids={ids!r} must be a non-empty list of non-negative integers")
        return ids
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise ValueError(f"{where}: prompt={record['prompt']!r} must be a string")
        return record["prompt"]
    raise ValueError(f"{where}: expected a 'prompt' or 'prompt_token_ids' field")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    sparse = SparseConfig(page_size=args.page_size, budget_pages=args.budget_pages, sink_pages=args.sink_pages,
                          local_pages=args.local_pages)
    return EngineConfig(
        flow=args.flow, sparse=sparse, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        num_pages=args.num_pages, kv_cache_memory_gb=args.kv_cache_memory_gb,
        gpu_memory_utilization=args.gpu_memory_utilization, dtype=args.dtype, device=args.device,
        enforce_eager=args.enforce_eager,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, ignore_eos=args.ignore_eos)
    try:  # the prompts (and the engine config) before the model: a bad line costs no model load
        prompts = read_prompts(args.prompts)
        config = engine_config(args)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    start = time.perf_counter()
    try:
        engine = Engine.from_pretrained(args.model, gguf_file=args.gguf_file, config=config)
    except (OSError, ValueError) as e:  # no such model, not a model directory, an unusable GGUF
        raise SystemExit(f"error: --model {args.model!r} could not be loaded: {' '.join(str(e).split())}") from None
    load_s = time.perf_counter() - start
    if args.chat and engine.tokenizer is not None:
        prompts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                        add_generation_prompt=True) if isinstance(p, str) else p
                   for p in prompts]
    completions = engine.generate(prompts, params, n=args.n)
    out = open(args.output, "w", encoding="utf-8") if args.output else None
    for i, group in enumerate(completions):
        for j, c in enumerate(group):
            print(f"=== prompt {i} sample {j} ({len(c.token_ids)} tokens, {c.finish_reason})")
            print(c.text if engine.tokenizer is not None else c.token_ids)
            if out:
                out.write(json.dumps({"prompt_index": i, "sample_index": j, "text": c.text, "token_ids": c.token_ids,
                                      "logprobs": c.logprobs, "finish_reason": c.finish_reason}) + "\n")
    if out:
        out.close()
    s = engine.stats
    print(f"\n{'model load (s)':<22}{load_s:>12.1f}\n{'generated tokens':<22}{s.generated_tokens:>12d}\n"
          f"{'generate time (s)':<22}{s.elapsed_s:>12.2f}\n{'tokens/s':<22}{s.tokens_per_s:>12.1f}\n"
          f"{'peak KV pages':<22}{s.peak_pages:>7d}/{s.num_pages:<4d}\n{'preemptions':<22}{s.preemptions:>12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

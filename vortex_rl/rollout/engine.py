"""`Engine`: the embedded rollout engine (``generate``, weight sync, sleep/wake, counters)."""

from __future__ import annotations

import numbers
import random
import time
from typing import Iterable, Sequence as Seq

import torch

from vortex_rl.devices import resolve_device, to_device, torch_dtype
from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.memory import GIB
from vortex_rl.rollout.model_runner import ModelRunner
from vortex_rl.rollout.model_source import ModelSource, open_source
from vortex_rl.rollout.models import ModelArch
from vortex_rl.rollout.page_manager import PageManager, pages_for
from vortex_rl.rollout.sampled_step import SampledStep
from vortex_rl.rollout.sampler import sample, sample_seed, sampling_tensors
from vortex_rl.rollout.sampling_params import SamplingParams, params_for_prompts
from vortex_rl.rollout.scheduler import Scheduler
from vortex_rl.rollout.sequence import Completion, Sequence
from vortex_rl.rollout.stats import EngineStats
from vortex_rl.rollout.swap_space import SwapSpace


class Engine:
    """Generates completions with paged KV, continuous batching and sparse decode attention.

    Build it with :meth:`from_pretrained`. The model is a Qwen3, Qwen2 or Llama decoder; prefill
    attention is dense, decode attention runs ``config.flow`` (``FlowRunner``).
    """

    def __init__(self, source: ModelSource, config: EngineConfig | None = None):
        self.config = config = config or EngineConfig()
        self.tokenizer = source.tokenizer
        self.hf_config = source.hf_config
        self.arch = ModelArch.from_hf_config(source.hf_config)
        self.device = resolve_device(config.device)
        self.dtype = torch_dtype(config.dtype, self.device, auto="bfloat16")
        self.max_model_len = config.max_model_len or self.arch.max_position_embeddings
        self.runner = ModelRunner(self.arch, config, device=self.device, dtype=self.dtype,
                                  max_model_len=self.max_model_len)
        self.runner.load_weights(source.weights, strict=True, atomic=False)
        self.pages = PageManager(self.runner.allocate_kv_cache(), config.page_size)
        self.eos_token_ids = source.eos_token_ids
        self.swap = SwapSpace(int(config.swap_space_gb * GIB // self.runner.page_bytes()),
                              swap_space_gb=config.swap_space_gb)
        self.scheduler = Scheduler(config, self.pages, self.swap, self.eos_token_ids, self.max_model_len)
        self.stats = EngineStats(num_pages=self.pages.num_pages)
        self.sleeping = False
        self._seeds = random.Random(config.seed)
        self._next_seq_id = 0
        self._finished: list[Sequence] = []  # finished or aborted since the last collect_finished()
        self._in_flight: SampledStep | None = None  # the last step's tokens, not read yet (overlap_schedule)

    @classmethod
    def from_pretrained(cls, model, tokenizer=None, config: EngineConfig | None = None, *,
                        gguf_file: str | None = None) -> "Engine":
        """Load a model and build the engine.

        Parameters
        ----------
        model: a Hugging Face model directory (safetensors), a ``.gguf`` file (or a directory with
            ``gguf_file=``; loaded through ``transformers``), or a ``transformers`` causal-LM object.
        tokenizer: overrides the source's tokenizer (needed for text prompts and ``Completion.text``).
        config: ``EngineConfig``; the default runs block-sparse decode with 32-page budgets.
        """
        return cls(open_source(model, gguf_file=gguf_file, tokenizer=tokenizer), config)

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, prompts, sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 n: int = 1, use_tqdm: bool = True) -> list[list[Completion]]:
        """Generate ``n`` completions for every prompt.

        Parameters
        ----------
        prompts: a list of strings (encoded with the tokenizer, its special tokens included) or of
            token-id lists; a single string or token-id list is one prompt.
        sampling_params: one ``SamplingParams`` for all prompts, or one per prompt (default:
            ``SamplingParams()``).
        n: samples per prompt; they share the prompt's KV pages.
        use_tqdm: show a progress bar over finished samples.

        Returns
        -------
        ``completions[i][j]``: sample ``j`` of prompt ``i`` (a ``Completion``).
        """
        if self.sleeping:
            raise RuntimeError("the engine is asleep: call wake() before generate()")
        prompt_ids = self._encode(prompts)
        params = params_for_prompts(sampling_params, len(prompt_ids))
        self._check_n(n)
        for ids, p in zip(prompt_ids, params):  # all checked before any is queued
            self._check_fits(ids, p)
        if self.scheduler.has_work():
            raise RuntimeError("generate() while requests added with add_request() are in flight: "
                               "step() until collect_finished() has returned them, or abort_request() them")
        samples = [self.add_request(ids, p, n, prompt_index=i) for i, (ids, p) in enumerate(zip(prompt_ids, params))]
        try:
            self._run_until_done(sum(len(s) for s in samples), use_tqdm)
        except BaseException:
            self.abort_all()  # an interrupted call must not leak requests into the next one
            self.collect_finished()
            raise
        return [[self._completion(seq) for seq in group] for group in samples]

    def _encode(self, prompts) -> list[list[int]]:
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                        and isinstance(prompts[0], numbers.Integral)):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings or token-id lists, got {type(prompts).__name__}")
        out = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if self.tokenizer is None:
                    raise ValueError("text prompts need a tokenizer: pass tokenizer= or token-id lists")
                prompt = self.tokenizer.encode(prompt)
            ids = [int(t) for t in prompt]
            self._check_ids(ids, i)
            out.append(ids)
        return out

    def _check_ids(self, ids: list[int], index: int) -> None:
        if not ids or min(ids) < 0 or max(ids) >= self.arch.vocab_size:
            raise ValueError(f"prompt {index} must hold 1+ token ids in [0, {self.arch.vocab_size}), got "
                             f"{len(ids)} ids" + (f" in [{min(ids)}, {max(ids)}]" if ids else ""))

    def _check_n(self, n) -> None:
        if not isinstance(n, int) or not 1 <= n <= self.config.max_num_seqs:
            raise ValueError(f"n={n!r} must be an int in 1..max_num_seqs={self.config.max_num_seqs}")

    def _check_fits(self, ids: list[int], params: SamplingParams) -> None:
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens leaves no room to generate within "
                             f"max_model_len={self.max_model_len}")
        longest = min(len(ids) + params.max_new_tokens, self.max_model_len)
        needed = pages_for(longest, self.config.page_size)
        if needed > self.pages.num_pages:
            raise ValueError(
                f"a request of {len(ids)} prompt + {params.max_new_tokens} new tokens needs {needed} KV pages "
                f"but the cache has {self.pages.num_pages}; raise num_pages / kv_cache_memory_gb or shorten it"
            )

    # ------------------------------------------------------------------------------------- request API
    def add_request(self, prompt_ids: list[int], params: SamplingParams, n: int = 1, *,
                    prompt_index: int = 0) -> list[Sequence]:
        """Queue ``n`` samples of one tokenised prompt; ``step()`` then runs them together with every other
        request in flight (continuous batching) and ``collect_finished()`` hands them back. ``generate`` is
        this loop for a batch of prompts.

        Parameters
        ----------
        prompt_ids: the prompt's token ids, in ``[0, vocab_size)`` (``1 <= len < max_model_len``).
        params: its ``SamplingParams``; ``seed=None`` draws one from the engine's seed stream.
        n: samples (``1..max_num_seqs``); they share the prompt's KV pages.
        prompt_index: recorded on the sequences (``Sequence.prompt_index``) and named in errors.

        Returns
        -------
        The ``n`` ``Sequence`` objects, in sample order; each is finished once ``seq.is_finished``.
        """
        if self.sleeping:
            raise RuntimeError("the engine is asleep: call wake() before add_request()")
        self._check_ids(prompt_ids, prompt_index)
        self._check_n(n)
        self._check_fits(prompt_ids, params)
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(32)
        group = []
        for j in range(n):
            group.append(Sequence(self._next_seq_id, prompt_ids, params, seed=sample_seed(seed, j),
                                  prompt_index=prompt_index, sample_index=j, max_pages=self.runner.max_pages_per_seq))
            self._next_seq_id += 1
        group[0].pending_samples = group[1:]
        self.scheduler.add(group[0])
        return group

    def abort_request(self, group: Seq[Sequence]) -> int:
        """Stop the samples of one request (what ``add_request`` returned) that have not finished.

        Their pages are freed now; they finish with ``finish_reason="abort"`` and the tokens generated so
        far, and ``collect_finished`` returns them. Returns how many were aborted.
        """
        self.flush()
        aborted = [a for seq in group for a in self.scheduler.abort(seq)]
        self._finished += aborted
        self._count_memory()
        return len(aborted)

    def abort_all(self) -> int:
        """``abort_request`` for every request in flight; returns how many samples were aborted."""
        self.flush()
        aborted = self.scheduler.abort_all()
        self._finished += aborted
        self._count_memory()
        return len(aborted)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work()

    def collect_finished(self) -> list[Sequence]:
        """The samples that finished (or were aborted) since the last call, in the order they finished."""
        finished, self._finished = self._finished, []
        return finished

    def _run_until_done(self, total: int, use_tqdm: bool) -> None:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        generated_before = self.stats.generated_tokens
        with tqdm(total=total, desc="generate", disable=not use_tqdm, dynamic_ncols=True) as bar:
            while self.scheduler.has_work():
                self.step()
                bar.update(len(self.collect_finished()))
                elapsed = time.perf_counter() - start
                if use_tqdm and elapsed > 0:
                    rate = (self.stats.generated_tokens - generated_before) / elapsed
                    bar.set_postfix(tok_s=f"{rate:.0f}", pages=self.pages.num_used, refresh=False)
        self.flush()  # a last overlapped step of samples that stopped: its tokens are discarded now
        self.stats.elapsed_s += time.perf_counter() - start

    @torch.inference_mode()
    def step(self) -> int:
        """Run one scheduler step (a prefill chunk or one decode token for every running sample) over all
        requests in flight; returns how many samples finished, which ``collect_finished`` then returns.

        With ``EngineConfig.overlap_schedule`` the tokens a step samples are read by the next call, after
        it has launched its own step: the device runs one step while the host prepares the next."""
        if self.device.type == "cuda":  # Triton launches and events use the thread's current device, and
            with torch.cuda.device(self.device):  # a server may call step() from a worker thread
                return self._step()
        return self._step()

    def _step(self) -> int:
        previous, self._in_flight = self._in_flight, None
        batch = self.scheduler.schedule(tokens_in_flight=previous is not None)
        launched = None
        if batch is not None:
            logits = self.runner.run(batch, feed=previous)
            samplers = self.scheduler.complete_step(batch)
            if samplers:
                rows = [row for row, _ in samplers]
                if rows != list(range(logits.shape[0])):  # prefill rows, forked samples sharing one
                    logits = logits[to_device(torch.tensor(rows), logits.device)]
                seqs = [seq for _, seq in samplers]
                out = sample(logits, sampling_tensors(seqs, logits.shape[-1], logits.device))
                launched = SampledStep.launch(seqs, self.scheduler.sampled(seqs), out)
            self._count_step(batch)
        finished = self._read(previous) if previous is not None else []
        if launched is not None and self.config.overlap_schedule:
            self._in_flight = launched
        elif launched is not None:
            finished += self._read(launched)
        self._count_memory()
        return len(finished)

    def _read(self, sampled: SampledStep) -> list[Sequence]:
        """Resolve a step's sampled tokens into its sequences; returns those that finished."""
        start = time.perf_counter()
        tokens, logprobs, tops = sampled.read()  # waits for the device on CUDA
        self.stats.token_wait_s += time.perf_counter() - start
        live = sum(not seq.is_finished for seq in sampled.seqs)  # an overlapped step may hold finished ones
        finished = self.scheduler.append_tokens(sampled.seqs, sampled.indices, tokens, logprobs, tops)
        self.stats.generated_tokens += live
        self.stats.discarded_tokens += len(sampled.seqs) - live
        self._finished += finished
        return finished

    def flush(self) -> None:
        """Read the step in flight, if any, so every sequence's tokens are known (before aborts, weight
        updates, sleep)."""
        if self._in_flight is not None:
            sampled, self._in_flight = self._in_flight, None
            self._read(sampled)
            self._count_memory()

    def _count_step(self, batch) -> None:
        s = self.stats
        if batch.is_prefill:
            s.prefill_steps += 1
            s.prefill_tokens += sum(batch.chunk_lens)
        else:
            s.decode_steps += 1

    def _count_memory(self) -> None:
        s = self.stats
        s.preemptions = self.scheduler.num_preemptions
        s.swapped_pages = self.swap.num_swapped_out
        s.peak_swapped_pages = max(s.peak_swapped_pages, self.swap.peak_used)
        s.pages_in_use = self.pages.num_used
        s.peak_pages = max(s.peak_pages, self.pages.peak_used)

    def _completion(self, seq: Sequence) -> Completion:
        text = self.tokenizer.decode(seq.completion_ids, skip_special_tokens=True) if self.tokenizer else ""
        return seq.to_completion(text)

    # ------------------------------------------------------------------------------- weights and memory
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load new weights (Hugging Face names, any dtype/device) atomically.

        Every name and shape is checked before any parameter changes; a mismatch raises ``ValueError``
        (an unknown name ``KeyError``) naming the weight and leaves the old weights in place. Parameters
        not named keep their values. Cached KV (stale under new weights) is dropped. Returns how many
        tensors were loaded.
        """
        self.flush()
        if self.scheduler.has_work():
            raise RuntimeError("update_weights() while requests are in flight")
        count = self.runner.load_weights(named_tensors, strict=False, atomic=True)
        self.pages.reset()
        return count

    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None:
        """Decode with a new sparse budget schedule from the next step on, without a rebuild (the page
        lists and CUDA graphs were sized for ``sparse.max_budget``); see ``FlowRunner.set_budget_schedule``."""
        self.flush()
        if self.scheduler.has_work():
            raise RuntimeError("set_budget_schedule() while requests are in flight")
        self.runner.flow_runner.set_budget_schedule(budget_schedule, budget_pages)

    def sleep(self) -> None:
        """Free the KV cache and CUDA graphs (e.g. while a colocated trainer runs); weights stay."""
        self.flush()
        if self.scheduler.has_work():
            raise RuntimeError("sleep() while requests are in flight")
        if not self.sleeping:
            self.runner.free_kv_cache()
            self.pages.reset()
            self.sleeping = True

    def wake(self) -> None:
        """Re-allocate the KV cache (same number of pages) and recapture the CUDA graphs."""
        if self.sleeping:
            self.runner.allocate_kv_cache(self.pages.num_pages)
            self.sleeping = False

    @torch.inference_mode()
    def state_checksum(self) -> float:
        """Sum of every weight element (each parameter once), in float64: compare with
        ``vortex_rl.rollout.weight_checksum`` of the trainer's weights."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for _, param in self.runner.model.named_parameters():
            total += param.double().sum()
        return float(total)

    def reset_stats(self) -> None:
        """Zero the counters (e.g. after a warm-up run)."""
        self.stats = EngineStats(num_pages=self.pages.num_pages)
        self.pages.peak_used = self.pages.num_used
        self.scheduler.num_preemptions = 0
        self.swap.reset_counters()

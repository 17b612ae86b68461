"""`SGLangEngine`: the rollout interface of ``vortex_rl.rollout.Engine``, served by SGLang.

``rollout.engine=sglang`` builds it with :func:`make_sglang_engine` from the same ``EngineConfig`` as our
engine; sparse decode runs inside SGLang as the ``vortex`` attention backend, with SGLang's tensor
parallelism, radix cache and scheduler. Differences from our engine, all from SGLang:

- log-probs are those of ``softmax(logits / temperature)`` before top-k/top-p filtering (ours are of the
  filtered distribution; the two agree when no filter is set, the usual RL setting);
- ``SamplingParams.seed`` seeds a sample only with ``SGLangOptions.deterministic``; otherwise the
  engine-wide ``EngineConfig.seed`` does;
- with ``ignore_eos`` SGLang also ignores the stop tokens;
- ``stats`` counts generated tokens, prefilled (uncached) prompt tokens and time only.
"""

from __future__ import annotations

import asyncio
import random
import time
import warnings
from typing import Iterable, Sequence as Seq

import torch

from vortex_rl.devices import TORCH_DTYPES
from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.model_source import eos_token_ids
from vortex_rl.rollout.sampler import sample_seed
from vortex_rl.rollout.sampling_params import SamplingParams, params_for_prompts
from vortex_rl.rollout.sequence import Completion
from vortex_rl.rollout.sglang.plugin import prepare_process
from vortex_rl.rollout.sglang.options import (
    GRAPH_MEMORY_SAVER_ENV,
    SLEEP_TAGS,
    SGLangOptions,
    completion_from_output,
    graph_memory_saver_on,
    server_args_for,
    sglang_sampling_params,
)
from vortex_rl.rollout.sglang.weight_sums import PARAM_SUMS_ACTION, combine_param_sums
from vortex_rl.rollout.sglang.weight_sync import (
    WeightUpdateError,
    check_result,
    checkpoint_shapes,
    update_from_disk,
    update_from_distributed,
    update_from_tensors,
)
from vortex_rl.rollout.stats import EngineStats
from vortex_rl.rollout.weights import weight_buckets


def make_sglang_engine(model_path: str, config: EngineConfig, options: SGLangOptions | None = None) -> "SGLangEngine":
    """The SGLang-backed rollout engine (``rollout.engine=sglang``).

    Parameters
    ----------
    model_path: Hugging Face model directory or hub id (SGLang loads it).
    config: the same ``EngineConfig`` as ``vortex_rl.rollout.Engine`` (flow, sparse budgets, batch limits).
    options: SGLang-only settings (``SGLangOptions``: tensor parallelism, dense backend, memory saver).
    """
    return SGLangEngine(model_path, config, options)


class SGLangEngine:
    """``vortex_rl.rollout.Engine``'s interface over ``sglang.Engine``: ``generate``, ``update_weights``,
    ``sleep``/``wake``, ``state_checksum``, and the attributes ``dtype``, ``eos_token_ids``, ``stats``."""

    def __init__(self, model_path: str, config: EngineConfig, options: SGLangOptions | None = None):
        prepare_process()  # version, entry point, registration: loud errors before SGLang starts
        import sglang
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        self.config = config
        self.options = options = options or SGLangOptions()
        hf_config = AutoConfig.from_pretrained(model_path)
        self.server_args = server_args_for(model_path, config, options, hf_config)
        self.dtype = TORCH_DTYPES[self.server_args["dtype"]]
        self.tokenizer = AutoTokenizer.from_pretrained(options.tokenizer_path or model_path)
        try:
            generation_config = GenerationConfig.from_pretrained(model_path)
        except OSError:
            generation_config = None
        self.eos_token_ids = eos_token_ids(hf_config, generation_config, self.tokenizer)
        self.engine = sglang.Engine(**self.server_args)
        self.stats = EngineStats()
        self.sleeping = False
        self._warned_graphs = False
        self.weights_error: str | None = None  # set while a failed update left mixed weights serving
        self.weight_shapes = checkpoint_shapes(model_path)  # checked before each bucket is sent
        self._seeds = random.Random(config.seed)

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, prompts, sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 n: int = 1, use_tqdm: bool = True) -> list[list[Completion]]:
        """``n`` completions per prompt: ``completions[i][j]`` is sample ``j`` of prompt ``i``.

        prompts: strings (encoded with the tokenizer, special tokens included) or token-id lists.
        sampling_params: one ``SamplingParams`` for all prompts or one per prompt.
        """
        if self.sleeping:
            raise RuntimeError("the engine is asleep: call wake() before generate()")
        if self.weights_error is not None:
            raise RuntimeError(f"the last weight update left SGLang serving a mix of old and new weights "
                               f"({self.weights_error}); send the complete weights again before generate()")
        prompt_ids = self._encode(prompts)
        params = params_for_prompts(sampling_params, len(prompt_ids))
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int")
        requests, owners = [], []
        for ids, p in zip(prompt_ids, params):
            base_seed = p.seed if p.seed is not None else self._seeds.getrandbits(32)
            for j in range(n):
                seed = sample_seed(base_seed, j) if self.options.deterministic else None
                # One request per sample: SGLang's radix cache shares the prompt's KV between them.
                sampling = sglang_sampling_params(p, seed, self.eos_token_ids)
                requests.append(dict(input_ids=ids, sampling_params=sampling, return_logprob=True,
                                     top_logprobs_num=p.logprobs or 0))
                owners.append(p)
        start = time.perf_counter()
        outputs = self.engine.loop.run_until_complete(self._run(requests, use_tqdm))
        self._count(outputs, time.perf_counter() - start)
        completions = [
            completion_from_output(out, p, self.tokenizer.decode(out["output_ids"], skip_special_tokens=True))
            for out, p in zip(outputs, owners)
        ]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    async def _run(self, requests: list[dict], use_tqdm: bool) -> list[dict]:
        from tqdm.auto import tqdm

        with tqdm(total=len(requests), desc="generate (sglang)", disable=not use_tqdm, dynamic_ncols=True) as bar:
            async def one(request):
                out = await self.engine.async_generate(**request)
                bar.update(1)
                return out

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def _count(self, outputs: list[dict], elapsed: float) -> None:
        s = self.stats
        s.elapsed_s += elapsed
        for out in outputs:
            meta = out["meta_info"]
            s.generated_tokens += len(out["output_ids"])
            s.prefill_tokens += int(meta.get("prompt_tokens", 0)) - int(meta.get("cached_tokens", 0))

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    def _encode(self, prompts) -> list[list[int]]:
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(
                f"prompts must be a non-empty list of strings or token-id lists, got {type(prompts).__name__}"
            )
        encoded = [self.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        empty = [i for i, ids in enumerate(encoded) if not ids]
        if empty:
            raise ValueError(f"prompts {empty} are empty")
        return encoded

    # ------------------------------------------------------------------------------- weights and memory
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load new weights (Hugging Face names) through ``update_weights_from_tensor``, in buckets of
        ``options.weight_bucket_mb``, inside one SGLang weight-update session; the radix cache (stale under
        new weights) is flushed once at the end. Returns how many tensors were sent.

        On failure raises ``WeightUpdateError``: with ``weights_changed=False`` the old weights still serve;
        otherwise ``generate()`` refuses until a complete update succeeds (``weight_sync``)."""
        self._check_weights_resident()
        buckets = weight_buckets(named_tensors, self.options.weight_bucket_mb << 20)
        return self._guarded(lambda: update_from_tensors(self.engine, buckets, self.weight_shapes))

    def init_weight_sync_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int,
                               group_name: str = "vortex_weight_sync", backend: str = "nccl") -> None:
        """Join a process group with the trainer for ``update_weights_from_distributed`` (disaggregated
        placement: the trainer's rank 0 broadcasts, this engine's ranks start at ``rank_offset``)."""
        result = self.engine.init_weights_update_group(master_address, master_port, rank_offset, world_size,
                                                       group_name, backend)
        check_result(result, "init_weights_update_group")

    def update_weights_from_distributed(self, names: list[str], dtypes: list[torch.dtype], shapes: list[list[int]],
                                        group_name: str = "vortex_weight_sync") -> None:
        """Receive weights the trainer broadcasts in the group of ``init_weight_sync_group`` (the trainer
        broadcasts the same tensors, in the same order, while this call waits), in one session; failures
        as in ``update_weights``."""
        self._check_weights_resident()
        self._guarded(lambda: update_from_distributed(self.engine, names, dtypes, shapes, group_name))

    def update_weights_from_disk(self, model_path: str, load_format: str | None = None) -> None:
        """Reload every weight from a checkpoint directory; failures as in ``update_weights``."""
        self._check_weights_resident()
        self._guarded(lambda: update_from_disk(self.engine, model_path, load_format))

    def _guarded(self, update):
        """Run one weight update; remember a failure that left mixed weights, forget it after a success."""
        try:
            out = update()
        except WeightUpdateError as exc:
            if exc.weights_changed:
                self.weights_error = str(exc)
            raise
        self.weights_error = None
        return out

    def _check_weights_resident(self) -> None:
        if self.sleeping and self.options.sleep_releases_weights:
            raise RuntimeError("a weight update while asleep with the weights released: call wake() first")

    def sleep(self) -> None:
        """Free the KV cache (with the flow's page state); with ``options.sleep_releases_weights`` the
        weights too (kept in CPU memory). CUDA graph memory is freed only when
        ``SGLANG_MEMORY_SAVER_CUDA_GRAPH=1`` was set for SGLang's processes (which SGLang allows only
        without a breakable prefill CUDA graph: ``options.check_graph_memory_saver``); otherwise it stays
        resident and a warning says so once."""
        if not self.options.enable_memory_saver:
            raise RuntimeError("sleep() needs SGLangOptions.enable_memory_saver=True")
        if not graph_memory_saver_on() and not self._warned_graphs:
            warnings.warn(f"SGLangEngine.sleep() frees the KV cache but not the CUDA graphs' memory "
                          f"({GRAPH_MEMORY_SAVER_ENV} is not set)", RuntimeWarning, stacklevel=2)
            self._warned_graphs = True
        if not self.sleeping:
            self.engine.release_memory_occupation(tags=self._memory_tags())
            self.sleeping = True

    def wake(self) -> None:
        """Re-map what ``sleep()`` freed."""
        if self.sleeping:
            self.engine.resume_memory_occupation(tags=self._memory_tags())
            self.sleeping = False

    def _memory_tags(self) -> list[str]:
        return list(SLEEP_TAGS) + (["weights"] if self.options.sleep_releases_weights else [])

    def state_checksum(self) -> float:
        """Sum of every weight element SGLang serves, in float64 (``weight_sums``): compare with
        ``vortex_rl.rollout.weight_checksum`` of the trainer's weights."""
        from sglang.srt.managers.io_struct import CheckWeightsReqInput

        request = CheckWeightsReqInput(action=PARAM_SUMS_ACTION, selector="target")
        success, message, ranks, _ = self.engine.loop.run_until_complete(
            self.engine.tokenizer_manager.check_weights(request, None)
        )
        if not success or not ranks:
            raise RuntimeError(f"SGLang weight sums failed ({message}); is the vortex plugin installed "
                               "(pip install -e . registers its sglang.srt.plugins entry point)?")
        return combine_param_sums(ranks)

    def shutdown(self) -> None:
        self.engine.shutdown()

    def __enter__(self) -> "SGLangEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


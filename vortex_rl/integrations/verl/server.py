"""`VortexServer`: the rollout server of one verl replica (a Ray async actor; ``replica.py`` makes it one).

verl's agent loop calls ``generate`` once per sample, concurrently; ``EngineLoop`` batches them
continuously on one ``Engine``. The other methods are the control calls ``RolloutReplica`` forwards
(``replica.py`` ~275-316 in verl 0.9.1) and the weight-update calls of our ``BaseRollout`` adapter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from verl.workers.rollout.replica import TokenOutput

from vortex_rl.integrations.verl.engine_loop import EngineLoop
from vortex_rl.integrations.verl.options import engine_config, max_new_tokens, sampling_params as to_sampling_params
from vortex_rl.integrations.verl.weight_sync import StagedWeights
from vortex_rl.rollout import Engine

logger = logging.getLogger(__name__)


class VortexServer:
    """One engine behind verl's token-in/token-out server interface.

    Parameters
    ----------
    config: verl's ``RolloutConfig`` (``rollout.engine_kwargs.vortex`` holds our options; ``options.py``).
    model_config: verl's ``HFModelConfig`` or its ``DictConfig`` (``local_path``, else ``path``: the
        Hugging Face directory to load).
    rollout_mode: verl's ``RolloutMode`` (kept for the logs; every mode behaves the same here).
    replica_rank: which replica this is.
    engine: an already built ``Engine`` (tests); otherwise ``launch_server`` builds it.
    """

    def __init__(self, config, model_config, rollout_mode=None, replica_rank: int = 0, engine: Engine | None = None):
        self.config = config
        self.model_config = model_config
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.global_steps: Optional[int] = None  # the step of the weights now loaded
        self.num_weight_updates = 0
        self.last_weight_checksum: Optional[float] = None
        self._generation_allowed = asyncio.Event()
        self._generation_allowed.set()
        self._rejecting = False
        self._staged: StagedWeights | None = None
        self.loop = EngineLoop(engine) if engine is not None else None

    async def launch_server(self) -> None:
        """Build the engine from ``model_config.local_path`` (in a thread: loading takes a while)."""
        if self.loop is None:
            cfg = engine_config(self.config)
            path = model_path(self.model_config)
            engine = await asyncio.to_thread(Engine.from_pretrained, path, None, cfg)
            self.loop = EngineLoop(engine)
            logger.info("vortex replica %d: %s, flow %s, %d KV pages", self.replica_rank, path, cfg.flow,
                        engine.pages.num_pages)

    @property
    def engine(self) -> Engine:
        return self.loop.engine

    # ------------------------------------------------------------------------------------------ generate
    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data: Optional[list[Any]] = None, video_data: Optional[list[Any]] = None,
                       **kwargs: Any) -> TokenOutput:
        """One sample of ``prompt_ids`` (verl's ``LLMServerClient.generate`` calls this per sample).

        ``TokenOutput.log_probs`` (with ``sampling_params["logprobs"]``) are the sampled tokens' log-probs
        under the sampling distribution; ``stop_reason`` is ``"completed"`` or ``"aborted"``.
        """
        if image_data or video_data or kwargs.get("audio_data"):
            raise NotImplementedError("the vortex rollout serves text-only models (no image/video/audio data)")
        rejected = await self._park_until_allowed(request_id)
        if rejected is not None:
            return rejected
        engine = self.engine
        max_new = max_new_tokens(self.config, len(prompt_ids), engine.max_model_len,
                                 sampling_params.get("max_tokens", sampling_params.get("max_new_tokens")))
        if max_new == 0:
            return TokenOutput(token_ids=[], log_probs=[], stop_reason="completed",
                               extra_fields={"global_steps": self.global_steps})
        params, want_logprobs = to_sampling_params(sampling_params, max_new=max_new,
                                                   ignore_eos=bool(self.config.ignore_eos))
        seq = await self.loop.generate(prompt_ids, params)
        return TokenOutput(
            token_ids=seq.completion_ids, log_probs=list(seq.logprobs) if want_logprobs else None,
            stop_reason="aborted" if seq.finish_reason == "abort" else "completed",
            extra_fields={"global_steps": self.global_steps})

    async def _park_until_allowed(self, request_id: str) -> Optional[TokenOutput]:
        while not self._generation_allowed.is_set():
            if self._rejecting:
                return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted",
                                   extra_fields={"global_steps": self.global_steps})
            await self._generation_allowed.wait()
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> int:
        """Stop every request (their callers get the tokens so far, ``stop_reason="aborted"``) and hold
        new ones until ``resume_generation`` (``reject_request``: answer them aborted instead)."""
        self._generation_allowed.clear()
        self._rejecting = reject_request
        return await self.loop.abort_all()

    async def resume_generation(self) -> None:
        self._rejecting = False
        self._generation_allowed.set()

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------------------------ memory control
    async def sleep(self) -> None:
        """Free the KV cache and CUDA graphs (the weights stay: the engine has no weight offload)."""
        async with self.loop.exclusive("sleep()") as engine:
            engine.sleep()

    async def wake_up(self) -> None:
        async with self.loop.exclusive("wake_up()") as engine:
            engine.wake()

    async def release_kv_cache(self) -> None:
        if self.config.free_cache_engine:
            await self.sleep()

    async def resume_kv_cache(self) -> None:
        await self.wake_up()

    async def clear_kv_cache(self) -> None:
        """Drop every cached page (the engine has no prefix cache, so nothing outlives a request)."""
        async with self.loop.exclusive("clear_kv_cache()") as engine:
            if not engine.sleeping:
                engine.pages.reset()

    # --------------------------------------------------------------------------------------- weights
    async def begin_weight_update(self) -> None:
        self._staged = StagedWeights()

    async def load_weight_bucket(self, payload: dict[str, Any]) -> int:
        """Stage one bucket (``weight_sync.pack_bucket``); returns how many tensors it held."""
        if self._staged is None:
            raise RuntimeError("load_weight_bucket() before begin_weight_update()")
        return self._staged.add(payload)

    async def commit_weight_update(self, expected_checksum: float, global_steps: Optional[int] = None
                                   ) -> dict[str, float]:
        """Verify and load the staged weights atomically (``StagedWeights.commit``); returns
        ``{"tensors", "checksum"}``. A mismatch raises and the update is dropped."""
        staged, self._staged = self._staged, None
        if staged is None:
            raise RuntimeError("commit_weight_update() before begin_weight_update()")
        async with self.loop.exclusive("a weight update") as engine:
            result = await asyncio.to_thread(staged.commit, engine, expected_checksum)
        self.num_weight_updates += 1
        self.last_weight_checksum = result["checksum"]
        if global_steps is not None:
            self.global_steps = global_steps
        return result

    async def get_stats(self) -> dict[str, Any]:
        """Counters for tests and logs: weight updates, the last checksum, engine steps, largest batch."""
        return {"num_weight_updates": self.num_weight_updates, "last_weight_checksum": self.last_weight_checksum,
                "global_steps": self.global_steps, "engine_steps": self.loop.num_steps,
                "max_batch": self.loop.max_batch, "generated_tokens": self.engine.stats.generated_tokens}

    async def start_profile(self, **kwargs) -> None:
        logger.info("vortex rollout: profiling is not implemented; start_profile ignored")

    async def stop_profile(self) -> None:
        pass



def model_path(model_config) -> str:
    """The model directory of verl's model config: ``local_path`` (an ``HFModelConfig``), else ``path``
    copied to local disk the way verl does (the replica passes the raw ``DictConfig``)."""
    local = getattr(model_config, "local_path", None)
    if local:
        return str(local)
    from verl.utils.fs import copy_to_local

    return copy_to_local(str(model_config.path), use_shm=bool(getattr(model_config, "use_shm", False)))

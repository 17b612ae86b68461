"""``rollout``: sampling, and the rollout engine (an ``EngineConfig`` with the trainer's sampling fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vortex_rl.rollout import EngineConfig, SamplingParams
from vortex_rl.trainers.config.checks import check

ROLLOUT_ENGINES = ("vortex", "sglang")
# Set from the rest of the run, so a value here would be a second, conflicting knob.
FROM_THE_RUN = {"device": ("auto", "trainer.device"), "seed": (0, "trainer.seed")}


@dataclass
class ValKwargs:
    """Sampling for validation: ``n`` samples per problem give mean@n and pass@n."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1

    def __post_init__(self) -> None:
        check(self.n >= 1, f"rollout.val_kwargs.n={self.n} must be >= 1")
        check(self.temperature >= 0, f"rollout.val_kwargs.temperature={self.temperature} must be >= 0")
        check_sampling(self, "rollout.val_kwargs.")


def check_sampling(section, prefix: str) -> None:
    """``temperature`` / ``top_p`` / ``top_k`` of ``section`` through the engine's own ``SamplingParams``
    checks, at composition (not at the first rollout, after the model loaded), named under ``prefix``."""
    try:
        SamplingParams(temperature=section.temperature, top_p=section.top_p, top_k=section.top_k)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}") from None


GUARD_SIGNALS = ("lower", "estimate")


@dataclass
class SparseGuardConfig:
    """The live budget guard (``vortex_rl.trainers.algos.budget_guard``): per context-length bin, the
    engine's sparse budget doubles (up to dense) for the next steps when that bin's ``alpha_p5`` falls
    below ``min_alpha_p5``, and halves again (not below the configured ``rollout.sparse`` schedule) when it
    stays healthy. Each bin's budget is logged as ``rollout/budget_pages/pos_<a>-<b>``.

    min_alpha_p5: the floor of the per-bin 5th percentile of the acceptance rate; ``null`` = no guard.
        Needs ``rollout.logprobs > 0`` and the embedded engine.
    signal: which per-token acceptance rate the floor applies to: ``lower`` (the lower bound ``alpha_k``,
        logged as ``rollout_corr/alpha_p5``; it cannot exceed the top-k mass, so at high temperature even
        dense rollouts may sit below the floor and the guard then runs dense) or ``estimate`` (the point
        estimate ``alpha_est``, ``rollout_corr/alpha_est_p5``: 1 for identical policies whatever the cut).
    hysteresis: a bin's budget is lowered only while its ``alpha_p5 >= min_alpha_p5 + hysteresis``.
    patience: steps in a row above that before a budget is lowered.
    bin_tokens: context tokens (prompt + response) per bin.
    max_budget_pages: the most pages any bin may get (``null``: dense, ``ceil(bin end / page_size)``); the
        engine's page lists and CUDA graphs are sized for it once.
    """

    min_alpha_p5: float | None = None
    signal: str = "lower"
    hysteresis: float = 0.02
    patience: int = 2
    bin_tokens: int = 256
    max_budget_pages: int | None = None

    def __post_init__(self) -> None:
        key = "rollout.sparse_guard"
        check(self.min_alpha_p5 is None or 0 < self.min_alpha_p5 < 1,
              f"{key}.min_alpha_p5={self.min_alpha_p5} must lie in (0, 1), or be null for no guard")
        check(self.signal in GUARD_SIGNALS,
              f"{key}.signal={self.signal!r} is not one of {', '.join(GUARD_SIGNALS)}")
        check(0 <= self.hysteresis < 1, f"{key}.hysteresis={self.hysteresis} must lie in [0, 1)")
        check(self.patience >= 1, f"{key}.patience={self.patience} must be >= 1")
        check(self.bin_tokens >= 1, f"{key}.bin_tokens={self.bin_tokens} must be >= 1")
        check(self.max_budget_pages is None or self.max_budget_pages >= 1,
              f"{key}.max_budget_pages={self.max_budget_pages} must be >= 1, or null for dense")

    @property
    def enabled(self) -> bool:
        return self.min_alpha_p5 is not None


@dataclass
class RolloutConfig(EngineConfig):
    """Sampling and the sparse rollout engine.

    The engine's own fields (``flow``, ``sparse``, ``max_num_seqs``, ``max_num_batched_tokens``,
    ``num_pages``, ``kv_cache_memory_gb``, ``gpu_memory_utilization``, ``swap_space_gb``, ``dtype``, ``enforce_eager``,
    ``cuda_graph_batch_sizes``, ``kernel_backend``) are ``vortex_rl.rollout.EngineConfig``'s, documented
    there, and reach the engine unchanged. Three are the run's: ``max_model_len`` (``null`` =
    ``data.max_prompt_length + data.max_response_length``; a larger value is kept), ``device``
    (``trainer.device``) and ``seed`` (``trainer.seed``); setting the last two here is refused.

    engine: ``vortex`` (the embedded engine, ``vortex_rl.rollout.Engine``) or ``sglang`` (the same sparse
        attention inside SGLang through its ``vortex`` attention backend; needs the ``sglang`` extra and a GPU).
    n: samples per prompt (the GRPO group size).
    temperature / top_p / top_k: sampling of training rollouts (``top_k=-1``: off).
    logprobs: top-k log-probs returned per generated token, for the rollout/training mismatch metrics
        (0 = off; at most 20).
    update_weights_bucket_mb: weights are sent to the engine in buckets of about this many MiB.
    free_cache_engine: put the engine to sleep (free its KV cache) while the actor trains.
    val_kwargs: sampling for validation.
    sparse_guard: the live budget guard (``SparseGuardConfig``; off by default).
    """

    # The engine shares its GPU with the learner (colocated), so it may not take the 0.9 a standalone
    # engine takes; 0.5 is verl's default for the same reason.
    gpu_memory_utilization: float = 0.5
    engine: str = "vortex"
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    logprobs: int = 20
    update_weights_bucket_mb: int = 512
    free_cache_engine: bool = True
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)
    sparse_guard: SparseGuardConfig = field(default_factory=SparseGuardConfig)

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as e:  # the engine names its fields bare; here they live under rollout.
            raise ValueError(f"rollout.{e}") from None
        for name, (default, owner) in FROM_THE_RUN.items():
            check(getattr(self, name) == default, f"rollout.{name}={getattr(self, name)!r} is set from {owner}; "
                  f"set {owner} instead")
        check(self.engine in ROLLOUT_ENGINES, f"rollout.engine={self.engine!r} must be one of {ROLLOUT_ENGINES}")
        check(self.n >= 1, f"rollout.n={self.n} must be >= 1")
        check(self.temperature > 0, f"rollout.temperature={self.temperature} must be > 0 for RL sampling")
        check_sampling(self, "rollout.")
        check(0 <= self.logprobs <= 20, f"rollout.logprobs={self.logprobs} must lie in 0..20")
        check(self.update_weights_bucket_mb >= 1, f"rollout.update_weights_bucket_mb={self.update_weights_bucket_mb} must be >= 1")
        if self.sparse_guard.enabled:
            check(self.logprobs > 0, "rollout.sparse_guard needs the acceptance rate: set rollout.logprobs > 0")
            check(self.engine == "vortex", f"rollout.sparse_guard needs rollout.engine=vortex, got {self.engine!r}")
            check(self.flow != "dense", "rollout.sparse_guard has nothing to guard with rollout.flow=dense")

    def engine_config(self, *, max_sequence_length: int, device: str, seed: int) -> EngineConfig:
        """The engine's config: this section's engine fields, with room for ``max_sequence_length`` tokens
        and the run's device and seed."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(EngineConfig)}
        fields.update(max_model_len=max(self.max_model_len or 0, max_sequence_length), device=device, seed=seed)
        return EngineConfig(**fields)

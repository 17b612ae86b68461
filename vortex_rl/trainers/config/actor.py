"""``actor``: policy updates (optimizer, mini/micro-batches, PPO clipping, loss, KL)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vortex_rl.trainers.algos.core_algos import KL_ESTIMATORS, LOSS_AGG_MODES, POLICY_LOSSES
from vortex_rl.trainers.config.checks import check


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then a constant learning rate."""

    lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_warmup_steps: int = 0

    def __post_init__(self) -> None:
        check(self.lr > 0, f"actor.optim.lr={self.lr} must be > 0")
        check(self.lr_warmup_steps >= 0, f"actor.optim.lr_warmup_steps={self.lr_warmup_steps} must be >= 0")


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
    entropy_coeff: weight of the entropy bonus, as verl's: the loss is the policy loss minus
        ``entropy_coeff`` times the responses' entropy (aggregated by ``loss_agg_mode``); 0 leaves it out.
    logits_chunk_tokens: response tokens whose ``[tokens, vocab]`` float32 logits exist at once when the
        actor scores a micro-batch (old log-probs and the loss; with gradients, each chunk's logits are
        recomputed in the backward pass instead of kept). Smaller saves memory, larger launches fewer
        matmuls; the results are the same up to float rounding.
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
    entropy_coeff: float = 0.0
    logits_chunk_tokens: int = 1024

    def __post_init__(self) -> None:
        check(self.ppo_epochs >= 1, f"actor.ppo_epochs={self.ppo_epochs} must be >= 1")
        check(self.ppo_micro_batch_size_per_gpu >= 1, f"actor.ppo_micro_batch_size_per_gpu={self.ppo_micro_batch_size_per_gpu} must be >= 1")
        check(self.ppo_max_token_len_per_gpu >= 1, f"actor.ppo_max_token_len_per_gpu={self.ppo_max_token_len_per_gpu} must be >= 1")
        check(self.entropy_coeff >= 0, f"actor.entropy_coeff={self.entropy_coeff} must be >= 0 (a bonus on entropy)")
        check(self.logits_chunk_tokens >= 1, f"actor.logits_chunk_tokens={self.logits_chunk_tokens} must be >= 1")
        check(self.grad_clip > 0, f"actor.grad_clip={self.grad_clip} must be > 0")
        check(0 <= self.clip_ratio_low < 1 and self.clip_ratio_high >= 0,
              f"actor.clip_ratio_low={self.clip_ratio_low} must lie in [0, 1) and clip_ratio_high={self.clip_ratio_high} >= 0")
        check(self.clip_ratio_c > 1, f"actor.clip_ratio_c={self.clip_ratio_c} must be > 1")
        POLICY_LOSSES.check_name(self.policy_loss, "actor.policy_loss")
        check(self.loss_agg_mode in LOSS_AGG_MODES, f"actor.loss_agg_mode={self.loss_agg_mode!r}; known: {LOSS_AGG_MODES}")
        KL_ESTIMATORS.check_name(self.kl_loss_type, "actor.kl_loss_type")

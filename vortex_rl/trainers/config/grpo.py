"""``GRPOConfig``: a whole training run, its sections checked against each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from vortex_rl.rollout import EngineConfig
from vortex_rl.trainers.config.actor import ActorConfig
from vortex_rl.trainers.config.algorithm import AlgorithmConfig
from vortex_rl.trainers.config.checks import check
from vortex_rl.trainers.config.cluster import ClusterConfig
from vortex_rl.trainers.config.data import DataConfig
from vortex_rl.trainers.config.model import ModelConfig
from vortex_rl.trainers.config.reward import RewardConfig
from vortex_rl.trainers.config.rollout import RolloutConfig
from vortex_rl.trainers.config.sft_warmup import SFTWarmupConfig
from vortex_rl.trainers.config.trainer import TrainerConfig

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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        mini = self.ppo_mini_batch_size
        check(self.data.train_batch_size % mini == 0,
              f"actor.ppo_mini_batch_size={mini} must divide data.train_batch_size={self.data.train_batch_size}")
        longest = self.data.max_sequence_length
        check(not self.actor.use_dynamic_bsz or self.actor.ppo_max_token_len_per_gpu >= longest,
              f"actor.ppo_max_token_len_per_gpu={self.actor.ppo_max_token_len_per_gpu} must hold the longest sequence, "
              f"data.max_prompt_length + data.max_response_length = {longest}")
        check(self.algorithm.adv_estimator != "grpo" or self.rollout.n >= 2,
              f"rollout.n={self.rollout.n}: GRPO compares samples of a prompt, so it needs rollout.n >= 2")

    @property
    def ppo_mini_batch_size(self) -> int:
        return self.actor.ppo_mini_batch_size or self.data.train_batch_size

    def engine_config(self, device: str) -> EngineConfig:
        """The rollout engine's config on ``device``: ``rollout``'s engine fields, room for the longest
        prompt plus response, the run's seed."""
        return self.rollout.engine_config(max_sequence_length=self.data.max_sequence_length, device=device,
                                          seed=self.trainer.seed)

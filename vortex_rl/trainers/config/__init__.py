"""The trainer's configuration: one dataclass per section, one file each, composed into ``GRPOConfig``.

Each field is documented once, in its section's docstring; recipes (``recipes/*.yaml``) override the
defaults and the command line overrides recipes (``python -m vortex_rl.train recipe=tiny_cpu
actor.optim.lr=1e-5``). Names follow verl where verl has one.
"""

from vortex_rl.trainers.config.actor import ActorConfig, OptimConfig
from vortex_rl.trainers.config.algorithm import AlgorithmConfig, RolloutCorrectionConfig
from vortex_rl.trainers.config.cluster import PLACEMENTS, ClusterConfig, ray_available
from vortex_rl.trainers.config.data import DataConfig
from vortex_rl.trainers.config.grpo import GRPOConfig
from vortex_rl.trainers.config.model import ModelConfig
from vortex_rl.trainers.config.reward import RewardConfig
from vortex_rl.trainers.config.rollout import ROLLOUT_ENGINES, RolloutConfig, ValKwargs
from vortex_rl.trainers.config.sft_warmup import SFTWarmupConfig
from vortex_rl.trainers.config.trainer import TrainerConfig

__all__ = ["ActorConfig", "AlgorithmConfig", "ClusterConfig", "DataConfig", "GRPOConfig", "ModelConfig",
           "OptimConfig", "PLACEMENTS", "ROLLOUT_ENGINES", "RewardConfig", "RolloutConfig", "RolloutCorrectionConfig",
           "SFTWarmupConfig", "TrainerConfig", "ValKwargs", "ray_available"]

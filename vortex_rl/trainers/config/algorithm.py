"""``algorithm``: advantages, sample selection and the rollout/training mismatch correction."""

from __future__ import annotations

from dataclasses import dataclass, field

from vortex_rl.trainers.algos.core_algos import ADV_ESTIMATORS
from vortex_rl.trainers.algos.dynamic_sampling import DYNAMIC_SAMPLING
from vortex_rl.trainers.algos.rollout_correction import ROLLOUT_IS
from vortex_rl.trainers.config.checks import check


@dataclass
class RolloutCorrectionConfig:
    """Correction for the rollout (sparse engine) vs training (dense) mismatch.

    rollout_is: registered importance-sampling mode (``vortex_rl.trainers.algos.rollout_correction.ROLLOUT_IS``):
        ``token`` = truncated importance sampling per token, weight
        ``min(pi_old / pi_rollout, rollout_is_threshold)``; ``null`` = off (metrics are still logged).
    rollout_is_threshold: the cap of the weights.
    position_bin_tokens: response positions per bin of the acceptance-rate percentile metric.
    """

    rollout_is: str | None = "token"
    rollout_is_threshold: float = 2.0
    position_bin_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.rollout_is is not None:
            ROLLOUT_IS.check_name(self.rollout_is, "algorithm.rollout_correction.rollout_is")
        check(self.rollout_is_threshold >= 1, f"algorithm.rollout_correction.rollout_is_threshold={self.rollout_is_threshold} must be >= 1")
        check(self.position_bin_tokens >= 1, f"algorithm.rollout_correction.position_bin_tokens={self.position_bin_tokens} must be >= 1")


@dataclass
class AlgorithmConfig:
    """Advantages and sample selection.

    adv_estimator: registered advantage estimator (``grpo``).
    norm_adv_by_std_in_grpo: divide group-centred scores by the group's standard deviation.
    dynamic_sampling: registered mode (``vortex_rl.trainers.algos.dynamic_sampling.DYNAMIC_SAMPLING``):
        ``none``, or ``polaris``: groups whose samples all score the same (no learning signal) are
        replaced by copies of informative groups of the same batch.
    mask_truncated_responses: leave responses cut at ``max_response_length`` out of the loss.
    rollout_correction: see ``RolloutCorrectionConfig``.
    """

    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    dynamic_sampling: str = "none"
    mask_truncated_responses: bool = False
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)

    def __post_init__(self) -> None:
        ADV_ESTIMATORS.check_name(self.adv_estimator, "algorithm.adv_estimator")
        DYNAMIC_SAMPLING.check_name(self.dynamic_sampling, "algorithm.dynamic_sampling")

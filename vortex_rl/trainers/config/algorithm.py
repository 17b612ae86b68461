"""``algorithm``: advantages, sample selection and the rollout/training mismatch correction."""

from __future__ import annotations

from dataclasses import dataclass, field

from vortex_rl.trainers.algos.core_algos import ADV_ESTIMATORS
from vortex_rl.trainers.algos.dynamic_sampling import DYNAMIC_SAMPLING
from vortex_rl.trainers.algos.rollout_correction import ROLLOUT_IS, ROLLOUT_RS
from vortex_rl.trainers.config.checks import check


@dataclass
class RolloutCorrectionConfig:
    """Correction for the rollout (sparse engine) vs training (dense) mismatch; names follow verl's
    ``algorithm.rollout_correction`` (``vortex_rl.trainers.algos.rollout_correction``).

    rollout_is: registered importance-sampling mode (``ROLLOUT_IS``): ``token`` = truncated IS per token,
        weight ``min(pi_old / pi_rollout, rollout_is_threshold)``; ``sequence`` = the product of the
        sequence's token ratios, truncated; ``geometric`` = their geometric mean, truncated; ``null`` =
        off (metrics are still logged).
    rollout_is_threshold: the cap of the weights (>= 1).
    rollout_is_batch_normalize: divide the truncated weights by their batch mean (per token for
        ``token``, per sequence otherwise).
    rollout_rs: registered rejection mode (``ROLLOUT_RS``): tokens (``token``) or whole sequences
        (``sequence``: product of ratios, ``geometric``: geometric mean) whose ratio lies outside
        ``[rollout_rs_threshold_lower, rollout_rs_threshold]`` leave the loss (IcePop-style masking);
        ``null`` = off.
    rollout_rs_threshold: upper bound of the kept ratios (> 1).
    rollout_rs_threshold_lower: lower bound of the kept ratios; ``null`` = ``1 / rollout_rs_threshold``.
    position_bin_tokens: response positions per bin of the acceptance-rate percentile metric.
    """

    rollout_is: str | None = "token"
    rollout_is_threshold: float = 2.0
    rollout_is_batch_normalize: bool = False
    rollout_rs: str | None = None
    rollout_rs_threshold: float = 2.0
    rollout_rs_threshold_lower: float | None = None
    position_bin_tokens: int = 2048

    def __post_init__(self) -> None:
        key = "algorithm.rollout_correction"
        if self.rollout_is is not None:
            ROLLOUT_IS.check_name(self.rollout_is, f"{key}.rollout_is")
        if self.rollout_rs is not None:
            ROLLOUT_RS.check_name(self.rollout_rs, f"{key}.rollout_rs")
        check(self.rollout_is_threshold >= 1, f"{key}.rollout_is_threshold={self.rollout_is_threshold} must be >= 1")
        check(self.rollout_rs_threshold > 1, f"{key}.rollout_rs_threshold={self.rollout_rs_threshold} must be > 1")
        lower = self.rollout_rs_threshold_lower
        check(lower is None or 0 < lower < 1,
              f"{key}.rollout_rs_threshold_lower={lower} must lie in (0, 1), or be null for 1 / rollout_rs_threshold")
        check(self.position_bin_tokens >= 1, f"{key}.position_bin_tokens={self.position_bin_tokens} must be >= 1")


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

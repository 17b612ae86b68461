"""verl custom reward for the Polaris recipe: vortex-rl's math-verify reward (1.0 when the last
``\\boxed{}`` of the response equals the ground truth, else 0.0), in verl's ``compute_score`` signature."""

from vortex_rl.data.math_reward import math_verify_reward


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return float(math_verify_reward(solution_str, str(ground_truth)))

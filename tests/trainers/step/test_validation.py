"""mean@k and pass@k against hand-computed values."""

import pytest
import torch

from vortex_rl.trainers.step.validation import mean_and_pass_at_k


def test_mean_and_pass_at_k_hand_computed():
    correct = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    mean_k, pass_k = mean_and_pass_at_k(correct)
    assert mean_k == pytest.approx(5 / 12) and pass_k == pytest.approx(2 / 3)
    assert mean_and_pass_at_k(torch.tensor([[True]])) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"\[num_problems, k\]"):
        mean_and_pass_at_k(torch.ones(3))

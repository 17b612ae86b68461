"""EpochSampler: permutations per epoch, deterministic, resumable."""

import pytest

from vortex_rl.data import EpochSampler


def test_epochs_are_permutations_and_deterministic():
    s = EpochSampler(10, 3, seed=5)
    batches = [s.next_batch() for _ in range(6)]  # 3 per epoch (the tail of 1 is skipped)
    for epoch in (batches[:3], batches[3:]):
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert batches[:3] != batches[3:]  # reshuffled
    again = EpochSampler(10, 3, seed=5)
    assert [again.next_batch() for _ in range(6)] == batches
    assert EpochSampler(4, 2, shuffle=False).next_batch() == [0, 1]


def test_state_round_trip_continues_identically():
    a = EpochSampler(7, 2, seed=1)
    for _ in range(5):
        a.next_batch()
    b = EpochSampler(7, 2, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.next_batch() for _ in range(6)] == [b.next_batch() for _ in range(6)]


def test_errors():
    with pytest.raises(ValueError, match=r"batch_size=5 must lie in \[1, dataset size=4\]"):
        EpochSampler(4, 5)
    with pytest.raises(ValueError, match="resume with the same data"):
        EpochSampler(8, 2).load_state_dict(EpochSampler(9, 2).state_dict())

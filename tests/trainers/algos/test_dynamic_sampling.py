"""Uniform groups counted; Polaris-style substitution by copies of informative groups."""

import pytest
import torch

from vortex_rl.trainers.algos.dynamic_sampling import count_uniform_groups, polaris_substitution, uniform_group_mask

SCORES = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_uniform_groups_hand_computed():
    assert uniform_group_mask(SCORES, GROUPS).tolist() == [True, True, False, False, True, True, False, False]
    assert count_uniform_groups(SCORES, GROUPS) == {"groups": 4, "uniform": 2, "all_max": 1, "all_min": 1}


def test_polaris_substitution():
    index, group_ids = polaris_substitution(SCORES, GROUPS, torch.Generator().manual_seed(0))
    informative = {1: [2, 3], 3: [6, 7]}
    for slots in ([0, 1], [4, 5]):  # the two uniform groups
        assert index[slots].tolist() in informative.values()
        assert len(set(group_ids[slots].tolist())) == 1 and group_ids[slots[0]] not in GROUPS.tolist()
    assert index[[2, 3, 6, 7]].tolist() == [2, 3, 6, 7]  # informative groups stay
    assert not uniform_group_mask(SCORES[index], group_ids).any()
    again = polaris_substitution(SCORES, GROUPS, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], index) and torch.equal(again[1], group_ids)


def test_polaris_without_informative_groups_and_bad_sizes():
    index, groups = polaris_substitution(torch.ones(4), torch.tensor([0, 0, 1, 1]), torch.Generator())
    assert index.tolist() == [0, 1, 2, 3] and groups.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"equal group sizes, got \[1, 2\]"):
        polaris_substitution(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), torch.Generator())

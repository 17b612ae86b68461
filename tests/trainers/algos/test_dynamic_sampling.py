"""Uniform groups counted; Polaris-style substitution by copies of informative groups."""

import pytest
import torch

from vortex_rl.trainers.algos.dynamic_sampling import (
    count_uniform_groups, keep_all_groups, polaris_substitution, uniform_group_mask,
)

SCORES = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_uniform_groups_hand_computed():
    assert uniform_group_mask(SCORES, GROUPS).tolist() == [True, True, False, False, True, True, False, False]
    assert count_uniform_groups(SCORES, GROUPS) == {"groups": 4, "uniform": 2, "all_max": 1, "all_min": 1}


def test_polaris_substitution_with_distinct_donors():
    sel = polaris_substitution(SCORES, GROUPS, torch.Generator().manual_seed(0))
    index, group_ids = sel.index, sel.group_ids
    informative = {1: [2, 3], 3: [6, 7]}
    donors = [index[slots].tolist() for slots in ([0, 1], [4, 5])]  # the two uniform groups
    assert sorted(donors) == sorted(informative.values())  # two informative groups: each donates once
    for slots in ([0, 1], [4, 5]):
        assert len(set(group_ids[slots].tolist())) == 1 and group_ids[slots[0]] not in GROUPS.tolist()
    assert index[[2, 3, 6, 7]].tolist() == [2, 3, 6, 7]  # informative groups stay
    assert not uniform_group_mask(SCORES[index], group_ids).any()
    assert sel.replaced == 2 and not sel.skip
    again = polaris_substitution(SCORES, GROUPS, torch.Generator().manual_seed(0))
    assert torch.equal(again.index, index) and torch.equal(again.group_ids, group_ids)


@pytest.mark.parametrize("seed", range(5))
def test_polaris_donates_evenly_when_donors_are_few(seed):
    """5 groups, 2 informative (2/5 > 1/3): the 3 uniform groups draw on the 2 donors 2 + 1 times."""
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    groups = torch.arange(5).repeat_interleave(2)
    sel = polaris_substitution(scores, groups, torch.Generator().manual_seed(seed))
    copies = [int(sel.index[2 * g]) // 2 for g in (2, 3, 4)]
    assert sorted(copies.count(d) for d in (0, 1)) == [1, 2] and not sel.skip


@pytest.mark.parametrize("informative, skip", [(0, True), (1, True), (2, True), (3, False)])
def test_polaris_skips_unless_more_than_a_third_carry_signal(informative, skip):
    """6 groups: with 2 informative (exactly 1/3) the step is skipped, with 3 it is not."""
    scores = torch.cat([torch.tensor([1.0, 0.0])] * informative + [torch.tensor([1.0, 1.0])] * (6 - informative))
    groups = torch.arange(6).repeat_interleave(2)
    sel = polaris_substitution(scores, groups, torch.Generator().manual_seed(0))
    assert sel.skip is skip
    if skip:
        assert sel.index.tolist() == list(range(12)) and torch.equal(sel.group_ids, groups) and sel.replaced == 0


def test_none_mode_skips_only_an_all_uniform_batch():
    assert keep_all_groups(torch.ones(4), torch.tensor([0, 0, 1, 1]), torch.Generator()).skip
    sel = keep_all_groups(SCORES, GROUPS, torch.Generator())
    assert not sel.skip and sel.index.tolist() == list(range(8))


def test_polaris_bad_sizes():
    with pytest.raises(ValueError, match=r"equal group sizes, got \[1, 2\]"):
        polaris_substitution(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), torch.Generator())

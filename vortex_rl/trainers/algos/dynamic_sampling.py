"""Groups without learning signal: count them, and optionally replace them (Polaris-style).

A group whose samples all score the same has zero GRPO advantage everywhere. Polaris ("POLARIS: a
post-training recipe for scaling RL on advanced reasoning models", 2025) keeps the batch size by
replacing such groups with copies of informative groups from the same batch (no extra generation), and
skips a batch in which too few groups carry a signal. A skipped batch takes no optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.registry import Registry

# ``fn(scores [N], group_ids [N], generator) -> Selection``: the step gathers its batch with ``index``, takes
# the new group ids (copies of a group get fresh ids), and takes no optimizer step when ``skip`` is set.
DYNAMIC_SAMPLING: Registry = Registry("dynamic sampling mode")
POLARIS_MIN_INFORMATIVE_FRAC = 1 / 3


@dataclass
class Selection:
    """What a dynamic-sampling mode decided for one batch.

    index: ``[num_samples]`` long, the rows to gather.  group_ids: ``[num_samples]`` the rows' new group ids.
    skip: take no optimizer step on this batch (too few groups carry a learning signal).
    replaced: groups replaced by copies of informative ones.
    """

    index: torch.Tensor
    group_ids: torch.Tensor
    skip: bool = False
    replaced: int = 0


def uniform_group_mask(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``[num_samples]`` bool: the sample's group has all-equal scores (groups of one count as uniform).

    Parameters
    ----------
    scores: ``[num_samples]`` float.  group_ids: ``[num_samples]`` int.
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1
    high = torch.full((num_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(
        0, inverse, scores.double(), reduce="amax")
    low = torch.full((num_groups,), torch.inf, dtype=torch.float64).scatter_reduce(
        0, inverse, scores.double(), reduce="amin")
    return (high == low)[inverse]


def count_uniform_groups(scores: torch.Tensor, group_ids: torch.Tensor) -> dict[str, int]:
    """Numbers of groups in total, all-equal, all at the maximum score and all at the minimum score."""
    uniform = uniform_group_mask(scores, group_ids)
    ids, first = _first_index_per_group(group_ids)
    top, bottom = scores.max(), scores.min()
    return {
        "groups": len(ids),
        "uniform": int(uniform[first].sum()),
        "all_max": int((uniform[first] & (scores[first] == top)).sum()),
        "all_min": int((uniform[first] & (scores[first] == bottom)).sum()),
    }


@DYNAMIC_SAMPLING.register("none")
def keep_all_groups(scores: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator) -> Selection:
    """Every sample as it is; a batch in which no group carries a signal is skipped (its advantages are all
    zero, yet AdamW's momentum and weight decay would still move the weights)."""
    _, first = _first_index_per_group(group_ids)
    all_uniform = bool(uniform_group_mask(scores, group_ids)[first].all())
    return Selection(torch.arange(scores.numel()), group_ids.clone(), skip=all_uniform)


@DYNAMIC_SAMPLING.register("polaris")
def polaris_substitution(scores: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator) -> Selection:
    """Polaris: skip the batch unless more than 1/3 of its groups carry a signal; otherwise replace each
    uniform group by a copy of an informative group, donors distinct while there are enough of them
    (then each informative group donates as evenly as possible). Groups must have equal sizes; a copy
    takes a new group id, so it stays a group of its own.
    """
    ids, first = _first_index_per_group(group_ids)
    members = [torch.nonzero(group_ids == g).flatten() for g in ids]
    if len({m.numel() for m in members}) != 1:
        raise ValueError(f"polaris substitution needs equal group sizes, got {sorted({m.numel() for m in members})}")
    uniform = uniform_group_mask(scores, group_ids)[first]
    informative = torch.nonzero(~uniform).flatten()
    index = torch.arange(scores.numel())
    new_ids = group_ids.clone()
    if informative.numel() <= POLARIS_MIN_INFORMATIVE_FRAC * len(ids):
        return Selection(index, new_ids, skip=True)
    targets = torch.nonzero(uniform).flatten().tolist()
    rounds = -(-len(targets) // informative.numel())
    donors = torch.cat([informative[torch.randperm(informative.numel(), generator=generator)] for _ in range(rounds)])
    next_id = int(group_ids.max()) + 1
    for g, donor in zip(targets, donors.tolist()):
        index[members[g]] = members[donor]
        new_ids[members[g]] = next_id
        next_id += 1
    return Selection(index, new_ids, replaced=len(targets))


def _first_index_per_group(group_ids: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    ids = torch.unique(group_ids).tolist()
    first = torch.stack([torch.nonzero(group_ids == g)[0, 0] for g in ids])
    return ids, first

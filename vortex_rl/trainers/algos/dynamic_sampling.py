"""Groups without learning signal: count them, and optionally replace them (Polaris-style).

A group whose samples all score the same has zero GRPO advantage everywhere. Polaris ("POLARIS: a
post-training recipe for scaling RL on advanced reasoning models", 2025) keeps the batch size by
replacing such groups with copies of informative groups from the same batch; no extra generation.
"""

from __future__ import annotations

import torch

from vortex_rl.registry import Registry

# ``fn(scores [N], group_ids [N], generator) -> (index [N] long, group_ids [N])``: the step gathers its batch
# with ``index`` and takes the new group ids (copies of a group get fresh ids).
DYNAMIC_SAMPLING: Registry = Registry("dynamic sampling mode")


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
def keep_all_groups(scores: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample as it is (uniform groups are only counted)."""
    return torch.arange(scores.numel()), group_ids.clone()


@DYNAMIC_SAMPLING.register("polaris")
def polaris_substitution(scores: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each uniform group by a copy of an informative group drawn at random from the batch.

    Groups must have equal sizes. The copy takes a new group id, so it stays a group of its own.

    Returns
    -------
    ``(index [num_samples] long, group_ids [num_samples])``: gather the batch with ``index``. With no
    informative group the batch is returned unchanged.
    """
    ids, first = _first_index_per_group(group_ids)
    members = [torch.nonzero(group_ids == g).flatten() for g in ids]
    if len({m.numel() for m in members}) != 1:
        raise ValueError(f"polaris substitution needs equal group sizes, got {sorted({m.numel() for m in members})}")
    uniform = uniform_group_mask(scores, group_ids)[first]
    informative = torch.nonzero(~uniform).flatten()
    index = torch.arange(scores.numel())
    new_ids = group_ids.clone()
    if informative.numel() == 0:
        return index, new_ids
    next_id = int(group_ids.max()) + 1
    for g in torch.nonzero(uniform).flatten().tolist():
        donor = int(informative[torch.randint(informative.numel(), (1,), generator=generator)])
        index[members[g]] = members[donor]
        new_ids[members[g]] = next_id
        next_id += 1
    return index, new_ids


def _first_index_per_group(group_ids: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    ids = torch.unique(group_ids).tolist()
    first = torch.stack([torch.nonzero(group_ids == g)[0, 0] for g in ids])
    return ids, first

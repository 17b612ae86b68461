"""Token embedding and the LM head (which may share the embedding's weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vortex_rl.rollout.layers.linear import attach_loader, copy_checked, linear


class VocabEmbedding(nn.Module):
    shard_ids = (None,)

    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.weight = attach_loader(nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False),
                                    self.weight_loader)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None, *, check_only: bool = False):
        copy_checked(param.data, loaded, check_only=check_only, what="parameter")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class LMHead(VocabEmbedding):
    """Projects hidden states to vocabulary logits; ``tie_to`` shares an embedding's weight."""

    def __init__(self, vocab_size: int, hidden_size: int, *, tie_to: VocabEmbedding | None = None):
        super().__init__(vocab_size, hidden_size)
        if tie_to is not None:
            self.weight = tie_to.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: ``[rows, hidden]`` -> logits ``[rows, vocab]`` float32."""
        return linear(hidden, self.weight).float()
